"""Learning-rate schedules used to train transformers.

* :class:`NoamSchedule` — the Transformer's inverse-square-root warm-up (Vaswani et al., 2017):
  ``lr(step) = scale · d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)`` (step counted from 1).
* :func:`warmup_cosine` — linear warm-up to ``peak`` then cosine decay to ``alpha · peak``; a
  configured ``keras.optimizers.schedules.CosineDecay`` (Keras ships this schedule).

Both are ``LearningRateSchedule`` objects that serialise with the optimizer inside ``.keras``
files.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_transformers")
class NoamSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Inverse-square-root schedule with linear warm-up.

    Args:
        d_model: model width (the ``d_model^-0.5`` factor).
        warmup_steps: steps of linear increase; the peak is at ``step = warmup_steps``.
        scale: overall multiplier.
    """

    def __init__(self, d_model, warmup_steps=4000, scale=1.0):
        if int(warmup_steps) < 1:
            raise ValueError(f"warmup_steps={warmup_steps}: must be >= 1.")
        if int(d_model) < 1:
            raise ValueError(f"d_model={d_model}: must be >= 1.")
        self.d_model = int(d_model)
        self.warmup_steps = int(warmup_steps)
        self.scale = float(scale)

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        warmup = float(self.warmup_steps)
        factor = ops.minimum(ops.rsqrt(step), step * warmup**-1.5)
        return self.scale * self.d_model**-0.5 * factor

    def get_config(self):
        return {"d_model": self.d_model, "warmup_steps": self.warmup_steps, "scale": self.scale}


def warmup_cosine(peak, total_steps, warmup_steps=0, alpha=0.0):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine decay to
    ``alpha · peak`` at ``total_steps``."""
    if int(total_steps) <= int(warmup_steps):
        raise ValueError(f"total_steps={total_steps} must exceed warmup_steps={warmup_steps}.")
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak,
        decay_steps=int(total_steps) - int(warmup_steps),
        alpha=alpha,
        warmup_target=peak if warmup_steps else None,
        warmup_steps=int(warmup_steps),
    )
