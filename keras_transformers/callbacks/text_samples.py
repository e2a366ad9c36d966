"""Log generated text for language models and seq2seq models to TensorBoard each epoch."""

import keras
import numpy as np

from keras_transformers.callbacks.summaries import summary_writer


def greedy_continue(model, prompt_ids, num_tokens, max_length=None):
    """Greedy continuation of ``prompt_ids (L0,)`` with a decoder LM, recomputing each step.

    A model with a fixed input length is fed a right-padded window of ``max_length`` tokens.
    """
    ids = [int(t) for t in prompt_ids]
    fixed = model.inputs[0].shape[1]
    for _ in range(num_tokens):
        window = ids[-(fixed or max_length or len(ids)) :]
        x = np.zeros((1, fixed or len(window)), "int32")
        x[0, : len(window)] = window
        logits = keras.ops.convert_to_numpy(model(x, training=False))
        ids.append(int(np.argmax(logits[0, len(window) - 1])))
    return ids[len(prompt_ids) :]


class TextSampleLogger(keras.callbacks.Callback):
    """Every ``every_n_epochs``, generate from ``prompts`` and log the text under ``samples``.

    Args:
        prompts: list of strings.
        encode: ``str -> list[int]`` (e.g. a tokenizer's ``encode``).
        decode: ``list[int] -> str``.
        logdir: TensorBoard log directory (text goes to ``logdir/train``).
        num_tokens: tokens to generate per prompt.
        generate_fn: ``(model, prompt_ids, num_tokens) -> ids``; defaults to greedy decoding
            with a decoder LM. Seq2seq models pass their own.
    """

    def __init__(
        self, prompts, encode, decode, logdir, num_tokens=64, every_n_epochs=1, generate_fn=None
    ):
        super().__init__()
        self.prompts = list(prompts)
        self.encode = encode
        self.decode = decode
        self.logdir = logdir
        self.num_tokens = int(num_tokens)
        self.every_n_epochs = int(every_n_epochs)
        self.generate_fn = generate_fn or greedy_continue
        self.last_samples = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        import tensorflow as tf

        self.last_samples = []
        for prompt in self.prompts:
            ids = self.generate_fn(self.model, list(self.encode(prompt)), self.num_tokens)
            self.last_samples.append(prompt + self.decode(ids))
        writer = summary_writer(self.logdir)
        with writer.as_default(step=epoch):
            body = "\n\n".join(f"    {s}" for s in self.last_samples)  # markdown code block
            tf.summary.text("samples", body)
        writer.close()
