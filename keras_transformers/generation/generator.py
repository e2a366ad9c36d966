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

import numpy as np
from keras import ops

from keras_transformers.generation._loop import SamplingLoop, cached_next, recomputing_next

PARTS = ("token_embedding", "transformer_layers")


class Generator(SamplingLoop):
    """Cached sampling loop around a decoder LM.

    Args:
        model: a decoder-only LM of :mod:`keras_transformers.models` (a
            :class:`~keras_transformers.models.DecoderLM`); its parts are read from attributes:
            ``token_embedding``, ``position_embedding``, ``transformer_layers``, ``final_norm``
            and, where the model has them, ``layer_positions`` (one position table added at each
            block's input, :class:`~keras_transformers.models.AlRfouLM`).
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
        super().__init__(
            model,
            PARTS,
            "kt.models.build_decoder_lm (or another decoder LM of kt.models)",
            list(getattr(model, "transformer_layers", None) or ()),
            jit,
            use_cache,
            "full recomputation for every token",
        )
        self.embedding = model.token_embedding
        self.position = getattr(model, "position_embedding", None)
        self.final_norm = getattr(model, "final_norm", None)
        # a separate output head (Image Transformer: logits over the pixel values only), else the
        # tied reverse embedding
        self.output_head = getattr(model, "output_head", None)
        self.blocks = list(model.transformer_layers)
        # Al-Rfou's LM adds a learned position table at every block's input (empty elsewhere)
        self.layer_positions = list(getattr(model, "layer_positions", None) or ())
        self.fixed_batch, self.fixed_length = model.inputs[0].shape[:2]

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
        for i, (block, layer_cache) in enumerate(zip(self.blocks, cache)):
            if self.layer_positions:
                x = self.layer_positions[i](x, start_index=cache_index)  # E_pos^i[t, t + l)
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
    def _run(self, sampler, prompt, mask, start, stop_token_ids):
        if not self.use_cache:
            width = self.fixed_length or prompt.shape[1]
            next_fn = recomputing_next(lambda t, _: self._logits(t), width, prompt.shape[1])
            return self._sample(sampler, next_fn, prompt, (), start, mask, stop_token_ids)
        cache = self.empty_cache(ops.shape(prompt)[0], ops.shape(prompt)[1])
        # Pre-fill positions [0, start - 1); the loop feeds token start - 1 itself.
        if start > 1:
            _, _, cache = self.call_with_cache(prompt[:, : start - 1], cache, 0)
        next_fn = cached_next(lambda token, _, cache, at: self.call_with_cache(token, cache, at))
        return self._sample(sampler, next_fn, prompt, cache, start, mask, stop_token_ids)

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
        return self._generate(
            sampler,
            stop_token_ids,
            (start, padded.shape),
            lambda sampler, p, m: self._run(sampler, p, m, start, stop_token_ids),
            (padded, mask),
        )


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
