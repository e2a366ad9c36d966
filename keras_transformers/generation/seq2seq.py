"""Cached encoder-decoder decoding for the :class:`~keras_transformers.models.Seq2Seq` model.

The source is encoded once, ``h_enc = Encoder(x) (B, Ls, d)``. Each decoder block then projects
its cross-attention keys and values once, ``K_c = h_enc W^k, V_c = h_enc W^v`` (the *cross cache*
``(B, 2, Ls, h_kv, dh)``, :meth:`TransformerDecoderBlock.init_cross_cache`), and keeps a
self-attention cache that grows by one key/value per generated token (the attention core's
format, ``(B, 2, L_max, h_kv, dh)`` for full attention). Decoding token ``t`` then costs one
single-position pass: ``O(t + Ls)`` attention reads and no re-encoding, where the uncached decode
re-runs the encoder and the whole decoder prefix for every token (Vaswani et al., 2017, section 3
decoder; the caching itself is standard practice, not part of the paper).

Token choice reuses ``keras_hub.samplers`` (greedy, beam, top-k, ...); the beam sampler
repeats every cache entry (self, cross, source mask) per beam and reorders them with the beams.

Example:
    >>> import numpy as np, keras_transformers as kt
    >>> model = kt.models.build_seq2seq(30, 30, src_length=8, tgt_length=8, d_model=16,
    ...                                 num_heads=2, num_encoder_layers=1, num_decoder_layers=1)
    >>> model.generate(np.array([[5, 6, 7]]), max_length=6, start_token_id=1).shape
    (1, 6)
"""

import numpy as np
from keras import ops

from keras_transformers.generation._loop import SamplingLoop, cached_next, recomputing_next
from keras_transformers.generation.generator import prepare_prompt

PARTS = (
    "encoder_token_embedding",
    "encoder_transformer_layers",
    "decoder_token_embedding",
    "decoder_transformer_layers",
    "output_head",
)


class Seq2SeqGenerator(SamplingLoop):
    """Cached (or recomputing) sampling loop around a :class:`~keras_transformers.models.Seq2Seq`.

    Args:
        model: the model :func:`~keras_transformers.models.build_seq2seq` returns; its parts are
            read from attributes (``encoder_*`` and ``decoder_*`` backbone parts,
            ``output_head``).
        jit: compile the loop (``tf.function`` / ``jax.jit``).
        use_cache: ``True``: self-attention caches and cross-attention caches (an error if a
            decoder block's core has no cache); ``False``: the full model (encoder included) for
            every token; ``None`` (default): cache when every decoder block supports it.
    """

    def __init__(self, model, jit=True, use_cache=None):
        super().__init__(
            model,
            PARTS,
            "kt.models.build_seq2seq",
            list(getattr(model, "decoder_transformer_layers", None) or ()),
            jit,
            use_cache,
            "the full model for every token",
        )
        self.encoder_blocks = list(model.encoder_transformer_layers)
        self.decoder_blocks = list(model.decoder_transformer_layers)
        config = model.get_config()
        self.src_length, self.tgt_length = int(config["src_length"]), int(config["tgt_length"])

    # ------------------------------------------------------------------ model pieces
    def _stack_input(self, prefix, token_ids, start_index=0):
        model = self.model
        x = getattr(model, prefix + "token_embedding")(token_ids)  # (B, l, d)
        position = getattr(model, prefix + "position_embedding", None)
        if position is not None:
            x = position(x, start_index=start_index) if start_index is not None else position(x)
        return x

    def encode(self, source_ids):
        """``source_ids (B, Ls)`` -> ``(encoder outputs (B, Ls, d), source mask (B, Ls) bool)``."""
        mask = ops.not_equal(source_ids, 0)  # (B, Ls)
        x = self._stack_input("encoder_", source_ids, None)
        for block in self.encoder_blocks:
            x = block(x, padding_mask=mask)  # (B, Ls, d)
        norm = getattr(self.model, "encoder_final_norm", None)
        return (x if norm is None else norm(x)), mask

    def empty_cache(self, source_ids, max_length):
        """``(self caches, cross caches, source mask)``: per decoder block an empty
        self-attention cache for ``max_length`` positions and the cross keys/values of the
        encoded source (computed here, once)."""
        encoded, source_mask = self.encode(source_ids)
        batch = ops.shape(source_ids)[0]
        dtype = self.model.compute_dtype
        self_caches = tuple(
            b.init_cache(batch, max_length, dtype=dtype) for b in self.decoder_blocks
        )
        cross = tuple(b.init_cross_cache(encoded) for b in self.decoder_blocks)
        return self_caches, cross, source_mask

    def call_with_cache(self, token_ids, cache, cache_index, padding_mask=None):
        """Decoder tokens ``(B, l)`` at positions ``cache_index..``: ``(logits (B, l, V), cache)``.

        ``padding_mask (B, L_max)``: the decoder tokens that are not padding (the uncached model
        masks padding keys; generated pad ids stay masked the same way).
        """
        self_caches, cross, source_mask = cache
        x = self._stack_input("decoder_", token_ids, cache_index)
        new = []
        for block, layer_cache, layer_cross in zip(self.decoder_blocks, self_caches, cross):
            x, layer_cache = block(
                x,
                padding_mask=padding_mask,
                encoder_padding_mask=source_mask,
                cache=layer_cache,
                cache_index=cache_index,
                cross_cache=layer_cross,
            )  # (B, l, d)
            new.append(layer_cache)
        norm = getattr(self.model, "decoder_final_norm", None)
        x = x if norm is None else norm(x)
        logits = ops.cast(self.model.output_head(x), "float32")  # (B, l, V)
        return logits, (tuple(new), cross, source_mask)

    def full_logits(self, source_ids, decoder_ids):
        """Logits ``(B, Lt, V)`` of the whole model (no cache): the reference decode."""
        inputs = {"encoder_token_ids": source_ids, "decoder_token_ids": decoder_ids}
        return ops.cast(self.model(inputs, training=False), "float32")

    # ------------------------------------------------------------------ loop
    def _run(self, sampler, source, prompt, mask, start, stop_token_ids, suppress, pad_id):
        max_length = prompt.shape[1]
        bias = None
        if suppress:
            row = np.zeros((self.model.output_head.units,), "float32")
            row[list(suppress)] = -1e9
            bias = ops.convert_to_tensor(row)[None]  # (1, V)

        def choose(logits):
            return logits if bias is None else logits + bias

        if not self.use_cache:
            next_fn = recomputing_next(
                lambda tokens, cache: self.full_logits(cache[0], tokens),
                self.tgt_length,
                max_length,
                pad_id,
                choose,
                hidden=False,
            )
            cache = (source,)
        else:
            cache = self.empty_cache(source, max_length)
            if start > 1:  # pre-fill the decoder prompt's positions [0, start - 1)
                prefix_mask = ops.not_equal(prompt, pad_id)
                _, cache = self.call_with_cache(prompt[:, : start - 1], cache, 0, prefix_mask)

            def step(token, tokens, cache, cache_index):
                keep = ops.not_equal(tokens, pad_id)  # (B, L_max)
                logits, cache = self.call_with_cache(token, cache, cache_index, keep)
                return logits, None, cache

            next_fn = cached_next(step, choose)
        return self._sample(sampler, next_fn, prompt, cache, start, mask, stop_token_ids)

    def generate(
        self,
        source_ids,
        max_length,
        sampler="greedy",
        start_token_id=None,
        decoder_prompt=None,
        stop_token_ids=None,
        suppress_token_ids=None,
        pad_id=0,
    ):
        """Decode ``max_length`` target tokens (the decoder prompt included) for each source.

        Args:
            source_ids: ``(B, Ls')`` int array (``Ls' <= src_length``, right-padded with 0).
            max_length: length of the output, decoder prompt included (``<= tgt_length``).
            sampler: a ``keras_hub.samplers`` name (``"greedy"``, ``"beam"``, ``"top_k"``, ...)
                or a ``Sampler`` instance (e.g. ``BeamSampler(num_beams=4)``).
            start_token_id: the decoder prompt is this one token (``<bos>``) for every source.
            decoder_prompt: ``(B, L0)`` decoder prompt instead (right-padded with ``pad_id``).
            stop_token_ids: stop once every row produced one of these ids (``<eos>``).
            suppress_token_ids: ids never chosen (their logits get ``-1e9``), e.g. ``<pad>``.
            pad_id: the padding id of both streams.

        Returns:
            int32 numpy ``(B, max_length)``: the decoder prompt followed by the generated tokens.
        """
        source = np.asarray(source_ids, np.int32)
        if source.ndim != 2 or source.shape[1] > self.src_length:
            raise ValueError(
                f"source_ids must have shape (batch, length <= src_length={self.src_length}); "
                f"got {source.shape}."
            )
        if (start_token_id is None) == (decoder_prompt is None):
            raise ValueError("pass exactly one of start_token_id=... and decoder_prompt=....")
        if max_length > self.tgt_length:
            raise ValueError(
                f"max_length={max_length} exceeds the model's target length {self.tgt_length}."
            )
        if decoder_prompt is None:
            decoder_prompt = np.full((source.shape[0], 1), int(start_token_id), np.int32)
        padded, mask, start = prepare_prompt(decoder_prompt, max_length, pad_id)
        if padded.shape[0] != source.shape[0]:
            raise ValueError(
                f"decoder_prompt has {padded.shape[0]} rows for {source.shape[0]} sources."
            )
        source = np.pad(source, ((0, 0), (0, self.src_length - source.shape[1])))
        suppress = tuple(suppress_token_ids or ())

        def run(sampler, s, p, m):
            return self._run(sampler, s, p, m, start, stop_token_ids, suppress, pad_id)

        key = (suppress, start, padded.shape, pad_id)
        return self._generate(sampler, stop_token_ids, key, run, (source, padded, mask))
