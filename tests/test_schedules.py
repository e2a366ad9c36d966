"""Learning-rate schedules: values and serialisation."""

import keras
import numpy as np
import pytest

from keras_transformers.schedules import NoamSchedule, warmup_cosine


def value(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_noam_peaks_at_warmup_and_decays_as_inverse_sqrt():
    s = NoamSchedule(d_model=256, warmup_steps=100)
    values = [value(s, t) for t in range(400)]
    assert int(np.argmax(values)) == 99  # step counted from 1
    assert values[10] < values[50] < values[99]
    np.testing.assert_allclose(values[399] / values[99], (100 / 400) ** 0.5, rtol=1e-4)
    np.testing.assert_allclose(values[99], 256**-0.5 * 100**-0.5, rtol=1e-5)


def test_noam_serialises_inside_an_optimizer():
    opt = keras.optimizers.Adam(learning_rate=NoamSchedule(64, 10, scale=2.0))
    clone = keras.optimizers.Adam.from_config(opt.get_config())
    assert isinstance(clone._learning_rate, NoamSchedule)
    assert clone._learning_rate.get_config() == {"d_model": 64, "warmup_steps": 10, "scale": 2.0}
    with pytest.raises(ValueError, match="warmup_steps=0"):
        NoamSchedule(64, 0)


def test_warmup_cosine():
    s = warmup_cosine(1e-3, total_steps=110, warmup_steps=10, alpha=0.1)
    assert value(s, 0) == pytest.approx(0.0)
    assert value(s, 10) == pytest.approx(1e-3, rel=1e-5)
    assert value(s, 110) == pytest.approx(1e-4, rel=1e-4)
    with pytest.raises(ValueError, match="total_steps=5"):
        warmup_cosine(1e-3, total_steps=5, warmup_steps=10)
