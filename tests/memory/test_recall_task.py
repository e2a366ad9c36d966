"""The cross-segment key-value recall task (kt.data.recall) and a Memorizing Transformer that
learns it: the answer of a first query is only in the previous segment (checked on the data), and
a trained model with the kNN memory beats the same decoder without it (slow)."""

import keras
import numpy as np
import pytest

from keras_transformers.data.recall import make_recall_streams, recall_vocabulary_size
from keras_transformers.memory.state import MemoryReset

P, K, B = 4, 8, 4


def test_first_query_answer_is_only_in_the_previous_segment():
    x, y, first, repeat = make_recall_streams(8, P, K, K, B, seed=0)
    assert x.shape == y.shape == first.shape == (16, 2 * P)
    assert x.max() < recall_vocabulary_size(K, K) and x.min() >= 4
    for n in range(1, len(x) // B, 2):  # query segments are the odd batches
        for b in range(B):
            store, query = x[(n - 1) * B + b], x[n * B + b]
            pairs = dict(zip(store[::2], store[1::2]))
            assert len(pairs) == P  # distinct keys
            for t in range(0, 2 * P, 2):
                assert y[n * B + b, t] == pairs[query[t]]  # the target is the stored value
                earlier = query[:t][::2]
                assert first[n * B + b, t] == float(query[t] not in earlier)
                assert first[n * B + b, t] + repeat[n * B + b, t] == 1.0
    scored = (first + repeat).reshape(-1, B, 2 * P)  # (batches, B, L)
    assert not scored[0::2].any() and scored[1::2].sum() == 4 * B * P // 2  # only queries
    with pytest.raises(ValueError, match="num_documents=6"):
        make_recall_streams(6, P, K, K, B)
    with pytest.raises(ValueError, match="num_keys=2"):
        make_recall_streams(8, P, 2, K, B)


def _train(model, epochs, documents, held_out=512, seed=0):
    x, y, first, repeat = make_recall_streams(documents, P, K, K, 16, seed=seed)
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    model.fit(
        x, y, sample_weight=first + repeat, batch_size=16, shuffle=False, epochs=epochs,
        verbose=0, callbacks=[MemoryReset()],
    )  # fmt: skip
    hx, hy, hfirst, _ = make_recall_streams(held_out, P, K, K, 16, seed=seed + 1)
    return model.evaluate(
        hx, hy, sample_weight=hfirst, batch_size=16, verbose=0, callbacks=[MemoryReset()]
    )[1]


def _memorizing():
    from keras_transformers.models.memorizing import build_memorizing_lm

    vocab = recall_vocabulary_size(K, K)
    return build_memorizing_lm(vocab, 2 * P, 16, memory_size=2 * P, top_k=4, d_model=64,
                               num_heads=4, num_layers=2)  # fmt: skip


def test_memorizing_lm_fits_the_recall_task():
    """Fast check: one epoch on the task runs, the memory holds the previous segment."""
    model = _memorizing()
    accuracy = _train(model, 1, 64, held_out=32)
    assert 0.0 <= accuracy <= 1.0
    memory = model.transformer_layers[-1].attention.memory
    assert np.all(keras.ops.convert_to_numpy(memory.size()) == 2 * P)


@pytest.mark.slow
def test_memory_beats_no_memory_on_held_out_recall():
    from keras_transformers.models.decoder_lm import build_decoder_lm

    vocab = recall_vocabulary_size(K, K)
    with_memory = _train(_memorizing(), 25, 4096)
    keras.utils.set_random_seed(0)
    without = _train(build_decoder_lm(vocab, 2 * P, d_model=64, num_heads=4, num_layers=2),
                     25, 4096)  # fmt: skip
    assert without < 1.5 / K  # chance: the answer is not in the segment
    assert with_memory > without + 0.15, (with_memory, without)  # measured 0.38 vs 0.125
