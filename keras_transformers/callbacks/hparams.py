"""Hyper-parameters for the TensorBoard HParams dashboard, so runs compare side by side."""

import keras

from keras_transformers.callbacks.summaries import summary_writer


def _plain(value):
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class HParamsLogger(keras.callbacks.Callback):
    """Write the run's hyper-parameters (e.g. ``{"attention": "performer", ...}``) at the start.

    The HParams dashboard joins them with the run's ``epoch_*`` scalars written by
    ``keras.callbacks.TensorBoard``; point that callback and this one at the same ``logdir``.
    """

    def __init__(self, hparams, logdir):
        super().__init__()
        self.hparams = {str(k): _plain(v) for k, v in hparams.items()}
        self.logdir = logdir

    def on_train_begin(self, logs=None):
        from tensorboard.plugins.hparams import api as hp

        writer = summary_writer(self.logdir)
        with writer.as_default():
            hp.hparams(self.hparams)
        writer.close()
