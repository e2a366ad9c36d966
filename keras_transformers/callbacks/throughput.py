"""Training throughput (tokens/s, examples/s) as TensorBoard scalars."""

import time

import keras

from keras_transformers.callbacks.summaries import summary_writer


class ThroughputLogger(keras.callbacks.Callback):
    """Measure examples/s and tokens/s over each epoch's training batches.

    The time of the first batch (tracing/compilation) is excluded. Values are written as
    ``throughput/examples_per_second`` and ``throughput/tokens_per_second`` scalars and added to
    the epoch ``logs`` (so the progress bar and History show them too).

    Args:
        batch_size: examples per batch.
        tokens_per_example: sequence length (tokens per example).
        logdir: TensorBoard log directory, or None to only add to ``logs``.
    """

    def __init__(self, batch_size, tokens_per_example, logdir=None):
        super().__init__()
        self.batch_size = int(batch_size)
        self.tokens_per_example = int(tokens_per_example)
        self.logdir = logdir
        self._start = None
        self._batches = 0
        self.history = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._batches = None, 0

    def on_train_batch_end(self, batch, logs=None):
        if self._start is None:  # the first batch includes tracing; time from its end
            self._start = time.perf_counter()
            return
        self._batches += 1

    def on_epoch_end(self, epoch, logs=None):
        if not self._batches:
            return
        seconds = time.perf_counter() - self._start
        examples = self._batches * self.batch_size / seconds
        tokens = examples * self.tokens_per_example
        self.history.append({"examples_per_second": examples, "tokens_per_second": tokens})
        if logs is not None:
            logs["tokens_per_second"] = tokens
            logs["examples_per_second"] = examples
        if self.logdir is not None:
            import tensorflow as tf

            writer = summary_writer(self.logdir)
            with writer.as_default(step=epoch):
                tf.summary.scalar("throughput/examples_per_second", examples)
                tf.summary.scalar("throughput/tokens_per_second", tokens)
            writer.close()
