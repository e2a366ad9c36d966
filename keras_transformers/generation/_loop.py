"""The sampling loop shared by :class:`~keras_transformers.generation.Generator` and
:class:`~keras_transformers.generation.Seq2SeqGenerator`.

A ``keras_hub.samplers`` sampler calls ``next(tokens (B, L_max), cache, index)`` once per new
token and expects ``(logits (B, V), hidden (B, d) or None, cache)`` for position ``index``, i.e.
the model's prediction after token ``index - 1``. Two ways to produce it:

- *recomputing*: the whole (right-padded) sequence through the model every step, row
  ``index - 1`` of its logits ``(B, L, V)``: ``O(L)`` positions per token;
- *cached*: token ``index - 1`` alone, ``(B, 1)``, through the model with each layer's cache
  (keys/values or recurrent state) at ``cache_index = index - 1``: one position per token.

:class:`SamplingLoop` holds what both generators share: the cache-support check, the compiled
loop per (sampler, stop ids, prompt shape, ...) and the two ``next`` functions; the generators
keep only their model pieces (the encoder pass, the cross-attention cache, suppressed tokens).
"""

import keras
import numpy as np
from keras import ops


def _same(logits):
    return logits


class SamplingLoop:
    """Base of the generators: checks ``model``, chooses caching, compiles and runs the sampler.

    Args:
        model: the Keras model to generate with.
        parts: attribute names ``model`` must have; ``needs`` ends the error when one is missing
            (``"<class> needs a model from <needs>; <model> has no <parts>."``).
        blocks: the blocks whose ``supports_cache`` decides ``use_cache=None``.
        jit: compile the loop (``tf.function`` / ``jax.jit``; PyTorch runs eagerly).
        use_cache: ``True`` (an error naming the attention variant if a block has no cache),
            ``False`` or ``None`` (cache when every block supports it).
        recompute: what ``use_cache=False`` does, for that error message.
    """

    def __init__(self, model, parts, needs, blocks, jit, use_cache, recompute):
        missing = [part for part in parts if getattr(model, part, None) is None]
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs a model from {needs}; "
                f"{type(model).__name__} has no {', '.join(missing)}."
            )
        self.model = model
        unsupported = [block for block in blocks if not getattr(block, "supports_cache", False)]
        if use_cache and unsupported:
            raise ValueError(
                f"attention={_describe(unsupported[0])!r} has no KV-cache decoding; use "
                f"use_cache=False ({recompute}) instead."
            )
        self.use_cache = not unsupported if use_cache is None else bool(use_cache)
        self.jit = jit
        self._compiled = {}

    def _compile(self, fn):
        if not self.jit:
            return fn
        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            return tf.function(fn, reduce_retracing=True)
        if backend == "jax":
            import jax

            return jax.jit(fn)
        return fn

    def _sample(self, sampler, next_fn, prompt, cache, start, mask, stop_token_ids):
        """Run ``sampler`` from position ``start`` of ``prompt (B, L_max)``."""
        return sampler(
            next_fn,
            prompt,
            cache=cache,
            index=start,
            mask=mask,
            stop_token_ids=stop_token_ids,
            model=self.model,
        )

    def _generate(self, sampler, stop_token_ids, key, run, arrays):
        """``run(sampler, *tensors)`` compiled once per ``(sampler, stop ids, *key)``, called on
        ``arrays``; returns the int32 numpy tokens."""
        # a name gets one compiled loop per shape; an instance its own (its seed state is reused)
        which = sampler if isinstance(sampler, str) else id(sampler)
        import keras_hub  # on first use: it imports TensorFlow on every backend

        sampler = keras_hub.samplers.get(sampler)
        stops = None if stop_token_ids is None else tuple(stop_token_ids)
        key = (which, stops, *key)
        if key not in self._compiled:
            fn = self._compile(lambda *tensors: run(sampler, *tensors))
            self._compiled[key] = (fn, sampler)  # keeps the sampler (and its id) alive
        fn = self._compiled[key][0]
        out = fn(*(ops.convert_to_tensor(array) for array in arrays))
        return ops.convert_to_numpy(out).astype(np.int32)


def recomputing_next(logits_of, width, max_length, pad_id=0, choose=_same, hidden=True):
    """``next`` without a cache: ``logits_of(tokens (B, width), cache) -> (B, width, V)`` on the
    sequence right-padded with ``pad_id`` to the model's ``width``, every step.

    Returns row ``index - 1``, ``choose``-n (e.g. suppressed ids), and that same raw row as the
    hidden state when ``hidden`` (else ``None``).
    """

    def next_fn(tokens, cache, index):
        batch = ops.shape(tokens)[0]
        if width > max_length:
            tokens = ops.pad(tokens, ((0, 0), (0, width - max_length)), constant_values=pad_id)
        logits = logits_of(tokens, cache)  # (B, width, V)
        row = ops.slice(logits, (0, index - 1, 0), (batch, 1, ops.shape(logits)[2]))[:, 0]
        return choose(row), (row if hidden else None), cache

    return next_fn


def cached_next(step, choose=_same):
    """``next`` with a cache: ``step(token (B, 1), tokens (B, L_max), cache, cache_index)`` ->
    ``(logits (B, 1, V), hidden (B, 1, d) or None, cache)`` at ``cache_index = index - 1``."""

    def next_fn(tokens, cache, index):
        token = ops.slice(tokens, (0, index - 1), (ops.shape(tokens)[0], 1))  # (B, 1)
        logits, hidden, cache = step(token, tokens, cache, index - 1)
        return choose(logits[:, 0]), (None if hidden is None else hidden[:, 0]), cache

    return next_fn


def _describe(block):
    """The attention variant of a block, for messages (the block's class when it has none)."""
    attention = getattr(block, "self_attention", None)
    core = getattr(attention, "attention_core", None)
    return core.variant if core is not None else type(block).__name__
