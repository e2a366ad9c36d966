"""LRA-style generated tasks."""

import numpy as np
import pytest

from keras_transformers import data


def evaluate_listops(text):
    """Independent evaluator: a stack machine over the bracketed prefix expression."""
    stack = []
    for token in text.split():
        if token.startswith("["):
            stack.append((token[1:], []))
        elif token == "]":
            op, args = stack.pop()
            value = {
                "MIN": min,
                "MAX": max,
                "MED": lambda a: int(np.median(a)),
                "SM": lambda a: sum(a) % 10,
            }[op](args)
            if not stack:
                return value
            stack[-1][1].append(value)
        else:
            stack[-1][1].append(int(token))
    raise AssertionError("unbalanced expression")


def test_listops_labels_match_an_independent_evaluator():
    x, y, texts = data.listops(300, max_length=128, min_length=20, seed=1)
    assert x.shape == (300, 128) and x.dtype == np.int32
    assert [evaluate_listops(t) for t in texts] == list(y)
    lengths = (x > 0).sum(1)
    assert lengths.min() >= 20 and lengths.max() <= 128
    assert len(np.unique(y)) >= 8
    np.testing.assert_array_equal(x, data.listops(300, max_length=128, min_length=20, seed=1)[0])
    assert set(np.unique(x)) <= set(data.LISTOPS_VOCAB.values())


def test_listops_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_args=1"):
        data.listops(10, max_args=1)


def test_byte_text_and_retrieval():
    x, y, names = data.byte_text_classification(40, length=256, seed=0)
    assert x.shape == (40, 256) and (x > 3).all() and len(names) == 4
    assert np.bincount(y).min() == 10
    (a, b), label = data.document_retrieval(20, length=128, seed=0)
    assert a.shape == b.shape == (20, 128) and label.sum() == 10


def test_associative_recall_target_is_the_paired_value():
    x, y, vocab = data.associative_recall(50, num_pairs=4, num_keys=8, num_values=8)
    assert vocab == 4 + 8 + 8
    for row, target in zip(x, y):
        keys, values = row[0:-1:2], row[1:-1:2]
        assert values[list(keys).index(row[-1])] == target
