"""Autoregressive generation with per-layer caches for the decoder LMs of ``kt.models``.

The prompt is run once through every block (pre-fill), each block's self-attention writing its
cache; after that each new token costs one single-position pass that reads the cache, so the
per-token time does not grow with a full recomputation of the context. The cache format is the
attention core's: full attention keeps all keys/values ``(B, 2, L_max, h_kv, dh)`` (per-token cost
``O(L)``), ``sliding_window`` a ring buffer of the last ``w + 1`` ``(B, 2, w + 1, h_kv, dh)`` and
``linear``/``performer`` the recurrent state ``(B, h, r, dv + 1)`` (per-token cost independent of
the length). Token choice reuses ``keras_hub.samplers`` (greedy, top-k, top-p,
beam, ...).

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> lm = kt.models.build_decoder_lm(vocab_size=260, max_length=64, d_model=32,
    ...                                 num_heads=2, num_layers=2, position="rope")
    >>> gen = kt.generation.Generator(lm)
    >>> out = gen.generate(np.array([[5, 6, 7]]), max_length=12, sampler="greedy")
    >>> out.shape
    (1, 12)
"""

import keras
import numpy as np
from keras import ops

PARTS = ("token_embedding", "transformer_layers")


class Generator:
    """Cached sampling loop around a decoder LM.

    Args:
        model: a decoder-only LM of :mod:`keras_transformers.models` (a
            :class:`~keras_transformers.models.DecoderLM`); its parts are read from attributes:
            ``token_embedding``, ``position_embedding``, ``transformer_layers``, ``final_norm``.
        jit: compile the pre-fill and the decoding loop (``tf.function``/``jax.jit``).
        use_cache: ``True``: decode incrementally with each layer's cache (an error if a block has
            none); ``False``: recompute the whole (padded) sequence for every token; ``None``
            (default): cache when every block supports it (``block.supports_cache``).

    Per-layer caches (``MultiHeadAttention.init_cache``): full attention keeps every key and
    value, ``(B, 2, L_max, h_kv, dh)``; ``sliding_window`` a ring buffer of the last ``w + 1``,
    ``(B, 2, w + 1, h_kv, dh)``; ``linear``/``performer`` the recurrent state ``(B, h, r, dv + 1)``.
    Models whose calls update memories (``model.stateful_memory``: Transformer-XL, Memorizing
    Transformer) recompute with ``stateless_call``, so generation leaves their memories as they
    were.
    """

    def __init__(self, model, jit=True, use_cache=None):
        self.model = model
        missing = [part for part in PARTS if getattr(model, part, None) is None]
        if missing:
            raise ValueError(
                f"Generator needs a model from kt.models.build_decoder_lm (or another decoder "
                f"LM of kt.models); {type(model).__name__} has no {', '.join(missing)}."
            )
        self.embedding = model.token_embedding
        self.position = getattr(model, "position_embedding", None)
        self.final_norm = getattr(model, "final_norm", None)
        # a separate output head (Image Transformer: logits over the pixel values only), else the
        # tied reverse embedding
        self.output_head = getattr(model, "output_head", None)
        self.blocks = list(model.transformer_layers)
        unsupported = [
            block for block in self.blocks if not getattr(block, "supports_cache", False)
        ]
        if use_cache and unsupported:
            raise ValueError(
                f"attention={_describe(unsupported[0])!r} has no KV-cache decoding; use "
                "use_cache=False (full recomputation for every token) instead."
            )
        self.use_cache = not unsupported if use_cache is None else bool(use_cache)
        self.fixed_batch, self.fixed_length = model.inputs[0].shape[:2]
        self.jit = jit
        self._compiled = {}

    # ------------------------------------------------------------------ model pieces
    def _embed(self, token_ids, start_index):
        x = self.embedding(token_ids)  # (B, l, d)
        scale = getattr(self.model, "embedding_scale", None)  # Gemma's sqrt(d)
        if scale is not None:
            x = scale(x)
        if self.position is not None:
            x = self.position(x, start_index=start_index)
        norm = getattr(self.model, "embedding_norm", None)  # Bloom
        return x if norm is None else norm(x)

    def _head(self, x):
        if self.final_norm is not None:
            x = self.final_norm(x)
        if self.output_head is not None:
            logits = ops.cast(self.output_head(x), "float32")  # (B, l, V_out)
        else:
            logits = ops.cast(self.embedding(x, reverse=True), "float32")  # (B, l, V)
        cap = getattr(self.model, "logit_soft_cap", None)  # Gemma 2
        return logits if cap is None else cap(logits)

    def empty_cache(self, batch_size, max_length):
        """One empty cache per decoder block (a tuple; formats depend on the attention core)."""
        return tuple(
            block.init_cache(batch_size, max_length, dtype=self.model.compute_dtype)
            for block in self.blocks
        )

    def call_with_cache(self, token_ids, cache, cache_index):
        """Run ``token_ids (B, l)`` at positions ``cache_index..cache_index+l``.

        Returns ``(logits (B, l, V), hidden (B, l, d), cache)``.
        """
        x = self._embed(token_ids, cache_index)
        layer_caches = []
        for block, layer_cache in zip(self.blocks, cache):
            x, layer_cache = block(x, cache=layer_cache, cache_index=cache_index)
            layer_caches.append(layer_cache)
        return self._head(x), x, tuple(layer_caches)

    def _logits(self, token_ids):
        """Next-token logits ``(B, L, V)`` of a full forward pass (memories left untouched)."""
        model = self.model
        if getattr(model, "stateful_memory", False):
            trainable = [v.value for v in model.trainable_variables]
            non_trainable = [v.value for v in model.non_trainable_variables]
            outputs, _ = model.stateless_call(trainable, non_trainable, token_ids, training=False)
        else:
            outputs = model(token_ids, training=False)
        select = getattr(model, "generation_logits", None)
        return ops.cast(outputs if select is None else select(outputs), "float32")

    # ------------------------------------------------------------------ generation
    def _compile(self, fn):
        if not self.jit:
            return fn
        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            return tf.function(fn, reduce_retracing=True)
        if backend == "jax":
            import jax

            return jax.jit(fn, static_argnums=())
        return fn

    def _recompute_next(self, max_length):
        """``next`` of the samplers without a cache: the full (padded) model every step."""
        width = self.fixed_length or max_length

        def next_fn(tokens, cache, index):
            batch = ops.shape(tokens)[0]
            if width > max_length:
                tokens = ops.pad(tokens, ((0, 0), (0, width - max_length)))
            logits = self._logits(tokens)  # (B, L, V)
            row = ops.slice(logits, (0, index - 1, 0), (batch, 1, ops.shape(logits)[2]))[:, 0]
            return row, row, cache

        return next_fn

    def _run(self, prompt, mask, start, sampler, stop_token_ids):
        batch, max_length = ops.shape(prompt)[0], ops.shape(prompt)[1]
        if not self.use_cache:
            return sampler(
                self._recompute_next(prompt.shape[1]),
                prompt,
                cache=(),
                index=start,
                mask=mask,
                stop_token_ids=stop_token_ids,
                model=self.model,
            )
        cache = self.empty_cache(batch, max_length)
        # Pre-fill positions [0, start - 1); the loop feeds token start - 1 itself.
        if start > 1:
            _, _, cache = self.call_with_cache(prompt[:, : start - 1], cache, 0)

        def next_fn(tokens, cache, index):
            token = ops.slice(tokens, (0, index - 1), (ops.shape(tokens)[0], 1))  # (B, 1)
            logits, hidden, cache = self.call_with_cache(token, cache, index - 1)
            return logits[:, 0], hidden[:, 0], cache

        return sampler(
            next_fn,
            prompt,
            cache=cache,
            index=start,
            mask=mask,
            stop_token_ids=stop_token_ids,
            model=self.model,
        )

    def generate(
        self,
        prompt,
        max_length,
        sampler="greedy",
        stop_token_ids=None,
        pad_id=0,
        prompt_lengths=None,
    ):
        """Continue ``prompt`` up to ``max_length`` tokens.

        Args:
            prompt: ``(B, L0)`` int array or a list of int lists (right-padded with ``pad_id``).
            max_length: total length of the output, prompt included.
            sampler: a ``keras_hub.samplers`` name (``"greedy"``, ``"top_k"``, ``"top_p"``,
                ``"random"``, ``"beam"``, ...) or ``Sampler`` instance.
            stop_token_ids: stop once every row produced one of these ids.
            pad_id: the id right-padding the prompts (their lengths are the non-``pad_id`` counts).
            prompt_lengths: ``(B,)`` prompt lengths given explicitly (then ``pad_id`` may also be
                a real token, e.g. a black pixel of the Image Transformer).

        Returns:
            int32 numpy ``(B, max_length)``: prompt followed by generated tokens.
        """
        padded, mask, start = prepare_prompt(prompt, max_length, pad_id, prompt_lengths)
        if self.fixed_batch is not None and padded.shape[0] != self.fixed_batch:
            raise ValueError(
                f"prompt has {padded.shape[0]} rows: this model has a fixed batch size of "
                f"{self.fixed_batch} (one memory row per stream); pass {self.fixed_batch} prompts."
            )
        if self.fixed_length is not None and max_length > self.fixed_length:
            raise ValueError(
                f"max_length={max_length} exceeds the model's input length {self.fixed_length}."
            )
        # a name gets one compiled loop per shape; an instance its own (its seed state is reused)
        which = sampler if isinstance(sampler, str) else id(sampler)
        import keras_hub  # on first use: it imports TensorFlow on every backend

        sampler = keras_hub.samplers.get(sampler)
        stops = None if stop_token_ids is None else tuple(stop_token_ids)
        key = (which, stops, start, padded.shape)
        if key not in self._compiled:
            fn = self._compile(lambda p, m: self._run(p, m, start, sampler, stop_token_ids))
            self._compiled[key] = (fn, sampler)  # keeps the sampler (and its id) alive
        fn = self._compiled[key][0]
        out = fn(ops.convert_to_tensor(padded), ops.convert_to_tensor(mask))
        return ops.convert_to_numpy(out).astype(np.int32)


def prepare_prompt(prompt, max_length, pad_id=0, prompt_lengths=None):
    """Right-pad ``prompt`` to ``max_length``: ``(padded (B, max_length) int32, mask (B,
    max_length) bool (True on prompt tokens), start)`` where ``start`` is the shortest prompt.

    ``prompt``: ``(B, L0)`` int array or a list of int lists (right-padded with ``pad_id``);
    ``prompt_lengths``: ``(B,)`` lengths (default: the non-``pad_id`` tokens of each row).
    """
    if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[0], (list, tuple)):
        width = max(len(p) for p in prompt)
        array = np.full((len(prompt), width), pad_id, np.int32)
        for i, p in enumerate(prompt):
            array[i, : len(p)] = p
        prompt = array
    prompt = np.asarray(prompt, np.int32)
    if prompt.ndim != 2:
        raise ValueError(f"prompt must have shape (batch, length); got {prompt.shape}.")
    if prompt_lengths is None:
        lengths = (prompt != pad_id).sum(axis=1)
    else:
        lengths = np.asarray(prompt_lengths, np.int64).reshape(-1)
        if lengths.shape[0] != prompt.shape[0] or (lengths > prompt.shape[1]).any():
            raise ValueError(
                f"prompt_lengths={lengths.tolist()}: one length per prompt row, each at most the "
                f"prompt width {prompt.shape[1]}."
            )
    if lengths.min() < 1:
        raise ValueError("every prompt needs at least one token.")
    if max_length <= prompt.shape[1]:
        raise ValueError(
            f"max_length={max_length} must exceed the prompt length {prompt.shape[1]}."
        )
    padded = np.full((prompt.shape[0], max_length), pad_id, np.int32)
    padded[:, : prompt.shape[1]] = prompt
    mask = np.arange(max_length)[None, :] < lengths[:, None]
    return padded, mask, int(lengths.min())


def _describe(block):
    """The attention variant of a block, for messages (the block's class when it has none)."""
    attention = getattr(block, "self_attention", None)
    core = getattr(attention, "attention_core", None)
    return core.variant if core is not None else type(block).__name__
