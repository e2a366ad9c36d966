"""Long Range Arena-style tasks generated locally (Tay et al., 2021, "Long Range Arena").

* :func:`listops` — nested ``MIN``/``MAX``/``MED``/``SUM_MOD`` expressions over the digits 0-9
  with bounded depth and arity, written in prefix form with brackets
  (``[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]`` -> 5); ten classes. Same operators and
  generation rules as the LRA paper, at lengths chosen by the caller.
* :func:`byte_text_classification` — byte-level classification of built-in text (several
  docstring sentences of one standard-library package family concatenated to a long document).
* :func:`document_retrieval` — two byte-level documents, label 1 when they come from the same
  package family (the LRA "retrieval" task's two-tower form).
* :func:`associative_recall` — key/value pairs followed by a query key; predict its value.

All are deterministic for a seed and return int32 numpy arrays with 0 as padding.
"""

from __future__ import annotations

import numpy as np

from .classification import builtin_classification_pools

LISTOPS_OPERATORS = ("MIN", "MAX", "MED", "SUM_MOD")
#: Token ids of the ListOps vocabulary (0 = padding).
LISTOPS_VOCAB = {
    "<pad>": 0,
    **{str(d): d + 1 for d in range(10)},
    "[MIN": 11,
    "[MAX": 12,
    "[MED": 13,
    "[SM": 14,
    "]": 15,
}
_OP_TOKEN = {"MIN": "[MIN", "MAX": "[MAX", "MED": "[MED", "SUM_MOD": "[SM"}


def _evaluate(op, values):
    if op == "MIN":
        return min(values)
    if op == "MAX":
        return max(values)
    if op == "MED":
        return int(np.median(values))
    return sum(values) % 10


def _listops_tree(rng, depth, max_depth, max_args, branch_probability):
    """Return ``(tokens, value)`` of a random expression."""
    if depth >= max_depth or (depth > 0 and rng.random() > branch_probability):
        digit = int(rng.integers(10))
        return [str(digit)], digit
    op = LISTOPS_OPERATORS[int(rng.integers(len(LISTOPS_OPERATORS)))]
    tokens, values = [_OP_TOKEN[op]], []
    for _ in range(int(rng.integers(2, max_args + 1))):
        sub_tokens, value = _listops_tree(rng, depth + 1, max_depth, max_args, branch_probability)
        tokens += sub_tokens
        values.append(value)
    return tokens + ["]"], _evaluate(op, values)


def listops(
    num_examples=2000,
    max_length=256,
    min_length=16,
    max_depth=6,
    max_args=5,
    branch_probability=0.25,
    seed=0,
):
    """Generate ListOps examples.

    Args:
        num_examples: examples to make.
        max_length: longest token sequence kept (and the padded length).
        min_length: shortest kept.
        max_depth: maximum nesting depth.
        max_args: maximum operator arity (at least 2).
        branch_probability: chance that an argument below the root is itself an expression.

    Returns:
        ``(x (N, max_length) int32, y (N,) int32 in [0, 10), texts list[str])``.
    """
    if max_args < 2:
        raise ValueError(f"max_args={max_args}: must be >= 2.")
    if min_length > max_length:
        raise ValueError(f"min_length={min_length} must be <= max_length={max_length}.")
    rng = np.random.default_rng(seed)
    x = np.zeros((num_examples, max_length), np.int32)
    y = np.zeros((num_examples,), np.int32)
    texts = []
    attempts = 0
    while len(texts) < num_examples:
        attempts += 1
        if attempts > 200 * num_examples:
            raise ValueError(
                f"Could not generate ListOps expressions of length {min_length}..{max_length} "
                f"with max_depth={max_depth}, max_args={max_args}; widen the range."
            )
        tokens, value = _listops_tree(rng, 0, max_depth, max_args, branch_probability)
        if not min_length <= len(tokens) <= max_length:
            continue
        i = len(texts)
        x[i, : len(tokens)] = [LISTOPS_VOCAB[t] for t in tokens]
        y[i] = value
        texts.append(" ".join(tokens))
    return x, y, texts


def _bytes(text, length):
    ids = np.frombuffer(text.encode("utf-8"), np.uint8)[:length].astype(np.int32) + 4
    out = np.zeros(length, np.int32)
    out[: len(ids)] = ids
    return out


def _family_documents(rng, pools, family, length):
    """Concatenate random sentences of one family until ``length`` bytes are filled."""
    pool = pools[family]
    parts, size = [], 0
    while size < length:
        sentence = pool[int(rng.integers(len(pool)))]
        parts.append(sentence)
        size += len(sentence.encode("utf-8")) + 1
    return " ".join(parts)


def byte_text_classification(num_examples=1000, length=1024, seed=0):
    """Byte-level documents of ``length`` bytes labelled by stdlib package family.

    Returns:
        ``(x (N, length) int32 with byte ids + 4, y (N,) int32, class_names)``.
    """
    pools = builtin_classification_pools()
    names = sorted(pools)
    rng = np.random.default_rng(seed)
    y = np.arange(num_examples, dtype=np.int32) % len(names)
    rng.shuffle(y)
    x = np.stack([_bytes(_family_documents(rng, pools, names[c], length), length) for c in y])
    return x, y, names


def document_retrieval(num_examples=1000, length=512, seed=0):
    """Pairs of byte-level documents; label 1 when both come from the same package family.

    Returns:
        ``((docs_a (N, length), docs_b (N, length)), y (N,) int32)``, half positive.
    """
    pools = builtin_classification_pools()
    names = sorted(pools)
    rng = np.random.default_rng(seed)
    y = (np.arange(num_examples) % 2).astype(np.int32)
    rng.shuffle(y)
    a, b = [], []
    for label in y:
        first = int(rng.integers(len(names)))
        second = first if label else int((first + rng.integers(1, len(names))) % len(names))
        a.append(_bytes(_family_documents(rng, pools, names[first], length), length))
        b.append(_bytes(_family_documents(rng, pools, names[second], length), length))
    return (np.stack(a), np.stack(b)), y


def associative_recall(num_examples=1000, num_pairs=8, num_keys=16, num_values=16, seed=0):
    """Sequences ``k1 v1 k2 v2 ... kn vn q``; the target is the value paired with key ``q``.

    Keys use ids ``4 .. 4+num_keys``, values the next ``num_values`` ids; keys in one sequence
    are distinct.

    Returns:
        ``(x (N, 2·num_pairs + 1) int32, y (N,) int32 value id, vocabulary_size)``.
    """
    if num_pairs > num_keys:
        raise ValueError(f"num_pairs={num_pairs} must be <= num_keys={num_keys}.")
    rng = np.random.default_rng(seed)
    key_base, value_base = 4, 4 + num_keys
    x = np.zeros((num_examples, 2 * num_pairs + 1), np.int32)
    y = np.zeros((num_examples,), np.int32)
    for i in range(num_examples):
        keys = rng.choice(num_keys, size=num_pairs, replace=False) + key_base
        values = rng.integers(num_values, size=num_pairs) + value_base
        x[i, 0:-1:2], x[i, 1:-1:2] = keys, values
        j = int(rng.integers(num_pairs))
        x[i, -1], y[i] = keys[j], values[j]
    return x, y, value_base + num_values
