"""The training schedule of Al-Rfou et al.'s intermediate-layer losses, as a Keras callback.

:class:`keras_transformers.models.al_rfou.AlRfouLM` weighs the loss of its layer ``i < N`` by
``w_i(p) = max(0, 1 − p·2N/i)``, ``p`` the fraction of training done (Al-Rfou et al., 2019: layer
``i`` is dropped after ``i/(2N)`` of training). The model counts its own training steps; this
callback tells it how many steps the schedule spans (``epochs × steps per epoch`` of the ``fit``
call, or ``total_steps``) at the start of training, and writes the current weights to the logs at
the end of every epoch (``aux_weight_layer_<i>``, so TensorBoard plots the decay).

Example:
    >>> from keras_transformers.callbacks.aux_schedule import AuxiliaryLossSchedule
    >>> callback = AuxiliaryLossSchedule()      # then: model.fit(x, y, callbacks=[callback])
"""

import keras


class AuxiliaryLossSchedule(keras.callbacks.Callback):
    """Start the intermediate-layer loss schedule of an ``AlRfouLM`` and log its weights.

    Args:
        total_steps: training steps the schedule spans; None takes ``epochs × steps`` of the
            ``fit`` call (``steps_per_epoch`` must then be known).
        restart: start again from step 0 at every ``fit`` call (False: continue the count).
    """

    def __init__(self, total_steps=None, restart=True):
        super().__init__()
        if total_steps is not None and int(total_steps) < 1:
            raise ValueError(f"total_steps={total_steps!r}: must be an integer >= 1.")
        self.total_steps = None if total_steps is None else int(total_steps)
        self.restart = bool(restart)
        self.history = []  # (epoch, progress, weights) at every epoch end

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "set_schedule_steps"):
            raise ValueError(
                f"AuxiliaryLossSchedule needs a model with set_schedule_steps (AlRfouLM); got "
                f"{type(self.model).__name__}."
            )
        total = self.total_steps
        if total is None:
            steps, epochs = self.params.get("steps"), self.params.get("epochs")
            if not steps or not epochs:
                raise ValueError(
                    "AuxiliaryLossSchedule(total_steps=None) needs fit's number of steps per "
                    "epoch; pass steps_per_epoch to fit or total_steps here."
                )
            total = int(steps) * int(epochs)
        step = 0 if self.restart else float(keras.ops.convert_to_numpy(self.model.aux_step))
        self.model.set_schedule_steps(total, step)

    def on_epoch_end(self, epoch, logs=None):
        weights = self.model.layer_weights()
        self.history.append((epoch, self.model.progress(), weights.tolist()))
        if logs is not None:
            for i, w in enumerate(weights, start=1):
                logs[f"aux_weight_layer_{i}"] = float(w)
