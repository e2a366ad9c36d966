"""One reset mechanism: MemoryReset / reset_memory reset Transformer-XL, Compressive and kNN
memories in the same model (any depth), the old names still work, a kNN-LM datastore is kept."""

import keras
import numpy as np
import pytest

from keras_transformers.memory import memorizing, segment
from keras_transformers.memory.compressive import CompressiveTransformerBlock
from keras_transformers.memory.knn import KNNMemory
from keras_transformers.memory.knn_lm import KNNLM
from keras_transformers.memory.memorizing import KNNAugmentedAttention
from keras_transformers.memory.segment import SegmentDocuments, TransformerXLBlock
from keras_transformers.memory.state import MemoryReset, StatefulMemory, memory_layers, reset_memory

B, L, D, H, DH, M = 2, 4, 8, 2, 4, 3
KNN_SIZE = 6


def np_(x):
    return keras.ops.convert_to_numpy(x)


class Wrapper(keras.layers.Layer):
    """Hides a kNN-augmented attention one level down (memories are found at any depth)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = KNNAugmentedAttention(H, DH, KNN_SIZE, B, top_k=2, name="knn_attention")

    def build(self, input_shape):
        self.inner.build(input_shape)

    def call(self, x):
        return self.inner(x)


def mixed_model():
    """XL block -> Compressive block -> (wrapped) kNN-augmented attention -> Dense."""
    x_in = keras.Input(batch_shape=(B, L, D))
    x = TransformerXLBlock(H, DH, 16, memory_length=M, batch_size=B, name="xl")(x_in)
    x = CompressiveTransformerBlock(
        H, DH, 16, memory_length=M, compressed_memory_length=2, compression_rate=2,
        compression="mean_pool", batch_size=B, name="compressive",
    )(x)  # fmt: skip
    x = Wrapper(name="wrapper")(x)
    return keras.Model(x_in, keras.layers.Dense(1, name="head")(x))


def segments(seed, n=1):
    return np.random.default_rng(seed).normal(size=(n * B, L, D)).astype("float32")


def assert_all_empty(model):
    xl, comp = model.get_layer("xl"), model.get_layer("compressive")
    knn = model.get_layer("wrapper").inner.memory
    for var in (xl.memory, comp.memory, comp.compressed_memory, knn.keys, knn.values):
        np.testing.assert_array_equal(np_(var), 0.0)
    for var in (xl.memory_documents, comp.memory_documents, comp.compressed_documents):
        np.testing.assert_array_equal(np_(var), -1)  # every slot empty
    np.testing.assert_array_equal(np_(knn.valid), 0)
    assert int(np_(knn.pointer)) == 0


def fill(model):
    for seed in (1, 2):  # 2 x L = 8 writes: the kNN memory (6 slots) is full
        model(segments(seed))


@pytest.mark.backends
def test_one_callback_resets_every_kind_of_memory():
    model = mixed_model()
    layers = memory_layers(model)
    assert sorted(type(layer).__name__ for layer in layers) == [
        "CompressiveTransformerBlock",
        "KNNMemory",
        "TransformerXLBlock",
    ]
    assert all(isinstance(layer, StatefulMemory) for layer in layers)
    x = segments(9)
    fresh = np_(model(x))  # every memory empty
    fill(model)
    knn = model.get_layer("wrapper").inner.memory
    assert int(np_(knn.size())[0]) == KNN_SIZE  # all three kinds hold something now
    assert np.abs(np_(model.get_layer("xl").memory)).max() > 0
    assert np.abs(np_(model.get_layer("compressive").compressed_memory)).max() > 0
    assert np.abs(np_(model(x)) - fresh).max() > 1e-4  # and it changes the output
    callback = MemoryReset()
    callback.set_model(model)
    callback.on_epoch_begin(0)
    assert_all_empty(model)
    np.testing.assert_allclose(np_(model(x)), fresh, atol=1e-5)
    # switched-off hooks leave the memories alone, the others reset
    fill(model)
    quiet = MemoryReset(on_epoch=False, on_test=False, on_predict=False)
    quiet.set_model(model)
    quiet.on_epoch_begin(0)
    quiet.on_test_begin()
    quiet.on_predict_begin()
    assert int(np_(knn.size())[0]) == KNN_SIZE
    callback.on_test_begin()
    assert_all_empty(model)
    model(x)
    callback.on_predict_begin()
    assert_all_empty(model)
    model(x)
    assert reset_memory(model) == 3
    assert_all_empty(model)


@pytest.mark.backends
def test_old_names_are_the_shared_mechanism():
    assert segment.MemoryReset is MemoryReset
    assert segment.reset_memory is reset_memory and segment.memory_layers is memory_layers
    assert memorizing.clear_memories is reset_memory
    assert issubclass(memorizing.KNNMemoryReset, MemoryReset)
    old = memorizing.KNNMemoryReset()  # old defaults: epochs only
    assert (old.on_epoch, old.on_test, old.on_predict) == (True, False, False)
    model = mixed_model()
    fill(model)
    old.set_model(model)
    old.on_test_begin()
    assert int(np_(model.get_layer("wrapper").inner.memory.size())[0]) == KNN_SIZE
    old.on_epoch_begin(0)  # resets the XL/compressive memories too, not only the kNN one
    assert_all_empty(model)
    fill(model)
    assert memorizing.clear_memories(model) == 3
    assert_all_empty(model)
    assert len(memorizing.knn_memories(model)) == 1
    # per-layer reset methods, old and new names
    xl = model.get_layer("xl")
    fill(model)
    xl.reset_state()
    np.testing.assert_array_equal(np_(xl.memory_documents), -1)
    docs = SegmentDocuments(B, document_start_id=1)
    docs(np.ones((B, L), "int32"))
    assert isinstance(docs, StatefulMemory) and reset_memory(docs) == 1
    np.testing.assert_array_equal(np_(docs.carry), 0)


@pytest.mark.backends
def test_knn_lm_datastore_survives_a_reset_and_unbuilt_layers_are_skipped():
    store = KNNLM(vocab_size=5, key_dim=3, datastore_size=4)
    store.add(np.ones((3, 3), "float32"), np.array([0, 1, 2]))
    assert reset_memory(store) == 0 and store.size() == 3  # built once from data: kept
    unbuilt = KNNMemory(memory_size=4, num_heads=1, key_dim=2, batch_size=1)
    assert memory_layers(unbuilt) == [unbuilt] and reset_memory(unbuilt) == 0
    assert not unbuilt.built


def test_memory_reset_inside_fit_and_predict():
    model = mixed_model()
    model.compile("sgd", "mse")
    x, y = segments(1, n=3), np.zeros((3 * B, L, 1), "float32")
    model.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0, callbacks=[MemoryReset()])
    knn = model.get_layer("wrapper").inner.memory
    # reset at the start of epoch 2, then 3 batches x L = 12 writes into 6 slots
    assert int(np_(knn.pointer)) == (3 * L) % KNN_SIZE
    # the XL memory holds the last m inputs of the last batch of epoch 2
    np.testing.assert_allclose(np_(model.get_layer("xl").memory), x[-B:, -M:], atol=1e-6)
    first = model.predict(x, batch_size=B, verbose=0, callbacks=[MemoryReset()])
    again = model.predict(x, batch_size=B, verbose=0, callbacks=[MemoryReset()])
    np.testing.assert_allclose(again, first, atol=1e-5)  # each prediction starts empty
    carried = model.predict(x, batch_size=B, verbose=0)  # no reset: continues the streams
    assert np.abs(carried - first).max() > 1e-5
