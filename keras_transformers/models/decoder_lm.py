"""GPT-style decoder-only language model (Radford et al., 2018; Vaswani et al., 2017 decoder).

``token_ids (B, L) -> embeddings (+ positions) -> N x causal block -> LN -> logits (B, L, V)``
with the output projection tied to the token embedding by default.

The builder returns a :class:`DecoderLM`, a Functional ``keras.Model`` built on the shared
backbone (:mod:`~keras_transformers.models.backbone`) with a ``generate`` method (cached decoding
with ``keras_hub.samplers``); it trains, saves and loads like any Functional model.
"""

import keras

from keras_transformers.models.backbone import (
    BackboneModel,
    builder_arguments,
    check_model_sizes,
    needs_static_length,
)
from keras_transformers.models.layers import LogitSoftCap

#: build_decoder_lm arguments that only the Transformer-XL form takes
MEMORY_ARGUMENTS = (
    "memory_length",
    "batch_size",
    "compressed_memory_length",
    "compression_rate",
    "compression",
)


#: build_decoder_lm's checkpoint-family options and their defaults (today's architecture)
CHECKPOINT_OPTIONS = {
    "norm": "layer",
    "layer_norm_epsilon": 1e-5,
    "use_bias": True,
    "qk_norm": False,
    "head_dim": None,
    "scale_embeddings": False,
    "embedding_norm": False,
    "logit_soft_cap": None,
    "feedforward": "dense",
    "num_experts": 8,
    "num_experts_per_token": 2,
    "router_aux_loss_weight": 0.01,
}


@keras.saving.register_keras_serializable(package="keras_transformers")
class DecoderLM(BackboneModel):
    """Decoder-only language model with :meth:`generate`, built from its builder's arguments.

    ``DecoderLM(**config)`` with the arguments of :func:`build_decoder_lm` (the builder checks
    them and calls it). Parts as attributes (:mod:`~keras_transformers.models.backbone`):
    ``token_embedding`` (its reverse call is the tied output head), ``position_embedding``,
    ``transformer_layers``, ``final_norm``. Subclasses (Transformer-XL, Memorizing,
    Universal Transformer and early-exit LMs) keep the same parts and :meth:`generate`.

    Example:
        >>> import numpy as np, keras_transformers as kt
        >>> lm = kt.models.build_decoder_lm(vocab_size=40, max_length=16, d_model=16,
        ...                                 num_heads=2, num_layers=1)
        >>> lm.generate(np.array([[3, 4, 5]]), max_length=8, sampler="greedy").shape
        (1, 8)
    """

    default_name = "decoder_lm"
    #: True when a call updates state variables (segment memories): generation then runs
    #: ``stateless_call`` so that it leaves the memories as they were.
    stateful_memory = False

    def build_graph(self, max_length, attention="full", logit_soft_cap=None, **config):
        length = max_length if needs_static_length(attention) else None
        token_ids = keras.Input(shape=(length,), dtype="int32", name="token_ids")
        x = self.assemble_stack(
            "decoder",
            token_ids,
            max_length=max_length,
            attention=attention,
            cross_attention=False,
            **config,
        )  # (B, L, d)
        logits = self.logits_output(x)  # (B, L, V) float32
        self.logit_soft_cap = None
        if logit_soft_cap is not None:
            self.logit_soft_cap = LogitSoftCap(logit_soft_cap, name="logit_soft_cap")
            logits = self.logit_soft_cap(logits)  # c · tanh(logits / c)
        return token_ids, logits

    def logits_output(self, x):
        """The head on the final hidden states: ``(B, L, d) -> logits (B, L, V) float32``: the
        token embedding's reverse call (its transposed table when tied, its own
        ``reverse_embeddings`` ``(d, V)`` when ``tie_embeddings=False``). ``build_graph`` then
        applies the ``logit_soft_cap`` part when the builder's ``logit_soft_cap`` is set."""
        logits = self.token_embedding(x, reverse=True)  # (B, L, V)
        return keras.layers.Activation("linear", dtype="float32", name="logits")(logits)

    def generation_logits(self, outputs):
        """The next-token logits ``(B, L, V)`` among the model's outputs (all of them here)."""
        return outputs

    def generator(self, use_cache=None, jit=True):
        """The :class:`kt.generation.Generator` of this model (created once per setting)."""
        from keras_transformers.generation.generator import Generator

        generators = self.__dict__.setdefault("_kt_generators", {})
        key = (use_cache, bool(jit))
        if key not in generators:
            generators[key] = Generator(self, jit=jit, use_cache=use_cache)
        return generators[key]

    def generate(
        self,
        prompt,
        max_length,
        sampler="greedy",
        stop_token_ids=None,
        pad_id=0,
        use_cache=None,
        jit=True,
    ):
        """Continue ``prompt`` to ``max_length`` tokens with a ``keras_hub`` sampler.

        Args:
            prompt: ``(B, L0)`` int array or list of int lists (right-padded with ``pad_id``).
            max_length: total output length, prompt included (at most the model's
                ``max_length``).
            sampler: ``"greedy"``, ``"top_k"``, ``"top_p"``, ``"random"``, ``"beam"`` or a
                ``keras_hub.samplers.Sampler`` (e.g. ``TopKSampler(k=10, seed=0,
                temperature=0.8)``).
            stop_token_ids: stop once every row produced one of these ids.
            use_cache: True/False/None (None: cache when every block can).
            jit: compile the decoding loop.

        Returns:
            int32 numpy ``(B, max_length)``.
        """
        return self.generator(use_cache, jit).generate(
            prompt, max_length, sampler=sampler, stop_token_ids=stop_token_ids, pad_id=pad_id
        )


def build_decoder_lm(
    vocab_size,
    max_length,
    d_model=128,
    num_heads=4,
    num_layers=2,
    ff_dim=None,
    attention="full",
    position="learned",
    dropout=0.0,
    activation="gelu",
    norm_first=True,
    tie_embeddings=True,
    num_key_value_heads=None,
    norm="layer",
    layer_norm_epsilon=1e-5,
    use_bias=True,
    qk_norm=False,
    head_dim=None,
    scale_embeddings=False,
    embedding_norm=False,
    logit_soft_cap=None,
    feedforward="dense",
    num_experts=8,
    num_experts_per_token=2,
    router_aux_loss_weight=0.01,
    name="decoder_lm",
    memory_length=None,
    batch_size=None,
    compressed_memory_length=0,
    compression_rate=2,
    compression="conv",
):
    """Build a causal language model (:class:`DecoderLM`).

    Args:
        vocab_size: vocabulary size ``V``.
        max_length: the longest sequence (size of a learned position table; the fixed input
            length for efficient attention cores, which block the sequence).
        d_model, num_heads, num_layers, ff_dim: sizes (``ff_dim`` defaults to ``4·d_model``).
        attention: any name in ``kt.attention.available()``, a config dict or an instance.
        position: any positional name (embedding- or score-side), a config dict (``{"name":
            "rope", "max_wavelength": 5e5, "scaling": {"type": "llama3", ...}}``) or None.
        activation: feed-forward activation (``gelu``, ``gelu_approximate``, ``relu``,
            ``silu``, ``swiglu``, ``geglu``, ``geglu_approximate``, ``reglu``, ...).
        tie_embeddings: reuse the token embedding matrix as the output projection (False: a
            separate ``(d, V)`` head, ``token_embedding.reverse_embeddings``).
        num_key_value_heads: grouped-query attention (key/value heads dividing ``num_heads``).
        norm: ``"layer"`` (LayerNormalization) or ``"rms"`` (``kt.blocks.RMSNormalization``,
            Llama/Mistral/Gemma) for every block norm, ``embedding_norm`` and ``final_norm``.
        layer_norm_epsilon: epsilon of every norm (and of the QK-norm).
        use_bias: biases of the attention projections and the feed-forward layers (False:
            Llama, Mistral, Gemma).
        qk_norm: RMS-normalize each query and key head before RoPE (OLMo-2, Qwen3, Gemma 3).
        head_dim: per-head size when it is not ``d_model / num_heads`` (Gemma).
        scale_embeddings: multiply the token embeddings by ``sqrt(d_model)`` (Gemma).
        embedding_norm: a norm right after the token (+ position) embeddings (Bloom).
        logit_soft_cap: ``c``: logits ``c · tanh(logits / c)`` (Gemma 2); None for none.
        feedforward: ``"dense"`` or ``"moe"``: every block's feed-forward is a
            ``kt.blocks.MixtureOfExperts`` (Mixtral) of ``num_experts`` experts of width
            ``ff_dim``, ``num_experts_per_token`` per token, its load-balancing loss weighted by
            ``router_aux_loss_weight`` (added to the training loss).
        memory_length: ``m`` > 0 builds a Transformer-XL (Dai et al., 2019) instead: each layer
            remembers its last ``m`` hidden states across consecutive batches (segment-level
            recurrence) and uses the ``xl`` relative encoding, so ``position`` must be ``"xl"``
            or left at its default, and ``attention`` must be ``"full"``. ``max_length`` is then
            the segment length. See :func:`~keras_transformers.models.build_transformer_xl_lm`.
            Its ``generate`` recomputes the segment for every token (no KV cache) and leaves the
            memories unchanged.
        batch_size: the fixed number of parallel streams (required with ``memory_length``).
        compressed_memory_length, compression_rate, compression: with ``memory_length``, a
            Compressive Transformer memory (Rae et al., 2020).

    Returns:
        :class:`DecoderLM` (a Functional ``keras.Model`` with ``generate``):
        ``token_ids (B, L) int -> logits (B, L, V) float32``. Train with
        ``SparseCategoricalCrossentropy(from_logits=True)`` on next-token targets.
    """
    config = dict(locals())
    if memory_length:
        return _build_memory_lm(**config)
    check_model_sizes(d_model, num_heads, num_layers, head_dim)
    if logit_soft_cap is not None and not float(logit_soft_cap) > 0:
        raise ValueError(f"logit_soft_cap={logit_soft_cap}: must be > 0 (or None).")
    return DecoderLM(**builder_arguments(config, drop=MEMORY_ARGUMENTS))


def _build_memory_lm(**args):
    """``build_decoder_lm(..., memory_length=m)``: checks the arguments, builds Transformer-XL."""
    from keras_transformers.models.transformer_xl import build_transformer_xl_lm

    if args["batch_size"] is None:
        raise ValueError(
            f"memory_length={args['memory_length']} needs batch_size=B: the memory keeps one row "
            "per stream, so the batch size is fixed."
        )
    if args["attention"] != "full":
        raise ValueError(
            f"attention={args['attention']!r}: with memory_length the Transformer-XL layers use "
            "'full' attention over [memory; segment]."
        )
    if args["position"] not in ("xl", "learned", None):
        raise ValueError(
            f"position={args['position']!r}: with memory_length the model uses the Transformer-XL "
            "relative encoding; pass position='xl' (or leave the default)."
        )
    changed = [name for name, default in CHECKPOINT_OPTIONS.items() if args[name] != default]
    if changed:
        raise ValueError(
            f"memory_length: the Transformer-XL form does not take {', '.join(changed)}; leave "
            "them at their defaults."
        )
    if not args["norm_first"] or args["num_key_value_heads"] is not None:
        raise ValueError(
            "memory_length: Transformer-XL layers are pre-norm with one key/value head per query "
            "head (norm_first=True, num_key_value_heads=None)."
        )
    return build_transformer_xl_lm(
        args["vocab_size"],
        segment_length=args["max_length"],
        memory_length=args["memory_length"],
        batch_size=args["batch_size"],
        d_model=args["d_model"],
        num_heads=args["num_heads"],
        num_layers=args["num_layers"],
        ff_dim=args["ff_dim"],
        dropout=args["dropout"],
        compressed_memory_length=args["compressed_memory_length"],
        compression_rate=args["compression_rate"],
        compression=args["compression"],
        activation=args["activation"],
        tie_embeddings=args["tie_embeddings"],
        name=args["name"],
    )
