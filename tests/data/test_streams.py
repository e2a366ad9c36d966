"""make_segment_streams: batch i+1 row b continues batch i row b; targets are next tokens."""

import numpy as np
import pytest

from keras_transformers.data.streams import make_segment_streams, stream_position


def test_rows_continue_across_batches():
    tokens = np.arange(1000)
    B, L = 3, 7
    x, y = make_segment_streams(tokens, B, L)
    assert x.shape == y.shape and x.shape[1] == L and x.shape[0] % B == 0
    n = x.shape[0] // B
    for b in range(B):
        stream = np.concatenate([x[k * B + b] for k in range(n)])
        assert np.all(np.diff(stream) == 1)  # contiguous, in order
        target = np.concatenate([y[k * B + b] for k in range(n)])
        np.testing.assert_array_equal(target, stream + 1)
    # streams are disjoint and start at multiples of the stream length
    starts = [x[b, 0] for b in range(B)]
    assert starts == [0, 333, 666]
    assert stream_position(B + 1, B) == (1, 1)


def test_uses_real_tokens_not_positions():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, size=101)
    x, y = make_segment_streams(tokens, 2, 5)
    # stream 0 covers tokens[0:50], stream 1 tokens[50:100]
    np.testing.assert_array_equal(x[0], tokens[0:5])
    np.testing.assert_array_equal(x[1], tokens[50:55])
    np.testing.assert_array_equal(x[2], tokens[5:10])
    np.testing.assert_array_equal(y[3], tokens[56:61])
    assert x.dtype == np.int32


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="batch_size=0"):
        make_segment_streams(np.arange(10), 0, 2)
    with pytest.raises(ValueError, match="segment_length=0"):
        make_segment_streams(np.arange(10), 1, 0)
    with pytest.raises(ValueError, match="too few"):
        make_segment_streams(np.arange(10), 4, 4)
