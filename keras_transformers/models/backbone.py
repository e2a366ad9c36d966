"""One backbone for every model family: token embedding -> N blocks -> final norm.

Every builder of :mod:`keras_transformers.models` returns a subclass of :class:`BackboneModel`:
a Functional ``keras.Model`` (as keras-hub backbones are) whose constructor takes the builder's
arguments, assembles the graph with :meth:`BackboneModel.assemble_stack` (blocks of one kind) or
:meth:`BackboneModel.assemble` (any list of blocks) and keeps the parts as attributes::

    model.token_embedding        # ReversibleEmbedding (its reverse call is the tied LM head)
    model.position_embedding     # embedding-side position layer, or None
    model.embedding_norm         # norm after the embeddings (Decision Transformer, Bloom), or None
    model.embedding_dropout      # Dropout, or None
    model.transformer_layers     # list of the N blocks
    model.final_norm             # LayerNormalization / RMSNormalization (pre-norm), or None

The options pretrained checkpoints need (``norm="rms"``, ``use_bias``, ``qk_norm``, ``head_dim``,
``layer_norm_epsilon``, ``scale_embeddings``, ``embedding_norm``) pass through
:meth:`BackboneModel.assemble_stack`; docs/models/backbone.md lists them with the checkpoint
families that use them.

``get_config()`` holds the builder's arguments (and the dtype policy) and ``from_config`` rebuilds
the model from them,
so a ``.keras`` file loads with ``keras.saving.load_model`` (no ``custom_objects``) into the same
class with the same attributes. Generation, early exit and kNN-LM read these attributes; nothing
finds a layer by its name string (the names stay as before for TensorBoard tags and weight
copies).

Example:
    >>> import keras_transformers as kt
    >>> lm = kt.models.build_decoder_lm(vocab_size=40, max_length=16, d_model=16,
    ...                                 num_heads=2, num_layers=2)
    >>> len(lm.transformer_layers), lm.final_norm is not None
    (2, True)
"""

import copy

import keras

from keras_transformers import attention as attention_registry
from keras_transformers import positional
from keras_transformers.blocks import TransformerDecoderBlock, TransformerEncoderBlock
from keras_transformers.blocks.norms import check_norm, make_norm
from keras_transformers.models.layers import (
    ScaleEmbeddings,
    embedding_position_layer,
    resolve_position,
)

BLOCK_KINDS = {"encoder": TransformerEncoderBlock, "decoder": TransformerDecoderBlock}


def check_model_sizes(d_model, num_heads, num_layers, head_dim=None):
    """Validate the common size arguments of the builders (``d_model`` must divide into the
    heads unless ``head_dim`` gives the per-head size)."""
    if head_dim is not None:
        if int(head_dim) < 1:
            raise ValueError(f"head_dim={head_dim}: must be >= 1.")
    elif d_model % num_heads:
        raise ValueError(
            f"d_model={d_model} must be divisible by num_heads={num_heads} (or pass head_dim)."
        )
    if num_layers < 1:
        raise ValueError(f"num_layers={num_layers}: must be >= 1.")


def attention_core(attention):
    """The core a builder's ``attention=`` names (an instance is returned as is)."""
    if isinstance(attention, attention_registry.AttentionCore):
        return attention
    return attention_registry.get(attention)


def needs_static_length(attention):
    """True when the core blocks or chunks the sequence (its ``needs_static_length``)."""
    return attention_core(attention).needs_static_length


def make_blocks(
    kind,
    num_layers,
    d_model,
    num_heads,
    ff_dim,
    attention="full",
    position=None,
    head_dim=None,
    **block_kwargs,
):
    """``num_layers`` blocks of one kind, each with its own attention core and position layer.

    Args:
        kind: ``"encoder"`` (:class:`TransformerEncoderBlock`, named ``encoder_block_<i>``) or
            ``"decoder"`` (:class:`TransformerDecoderBlock`, ``decoder_block_<i>``; pass
            ``cross_attention``).
        position: the score-side spec of :func:`resolve_position` (or None).
        head_dim: per-head size (``d_model // num_heads`` when None).
        **block_kwargs: the blocks' other arguments (``norm_first``, ``dropout``, ...).
    """
    if kind not in BLOCK_KINDS:
        raise ValueError(f"kind={kind!r}: allowed values are {', '.join(BLOCK_KINDS)}.")
    return [
        BLOCK_KINDS[kind](
            num_heads,
            int(head_dim) if head_dim is not None else d_model // num_heads,
            ff_dim,
            attention=attention_registry.fresh(attention),
            position=None if position is None else positional.fresh(position),
            name=f"{kind}_block_{i}",
            **block_kwargs,
        )
        for i in range(num_layers)
    ]


PARTS = (
    "token_embedding",
    "embedding_scale",
    "position_embedding",
    "segment_embedding",
    "embedding_norm",
    "embedding_dropout",
    "transformer_layers",
    "final_norm",
)


def head_compute_dtype(policy=None):
    """The dtype of the tied output head's matmul under ``policy`` (the global one by default):
    None (the layer's own) in full precision, the compute dtype under a mixed policy.

    Keras' ``Embedding`` does not autocast its float32 table, so without this the reverse call
    of a ``mixed_bfloat16`` model multiplies its bfloat16 hidden states by the float32 table in
    **float32** (type promotion): the ``(B·L, d) @ (d, V)`` head, forward and both gradients, the
    largest matmul of a language model, kept float32 speed (measured: the three head matmuls
    took as long as in a float32 model). The logits are then cast to float32 by the model's
    float32 ``logits`` layer, so the softmax and the loss stay float32.
    """
    policy = policy or keras.config.dtype_policy()
    if policy.quantization_mode is None and policy.compute_dtype != policy.variable_dtype:
        return policy.compute_dtype
    return None


def run_backbone(
    token_ids,
    blocks,
    vocab_size=None,
    d_model=None,
    max_length=None,
    position=None,
    dropout=0.0,
    norm_first=True,
    tie_embeddings=True,
    embedded=None,
    embedding_norm=False,
    position_layer=None,
    layer_norm_epsilon=1e-5,
    norm="layer",
    scale_embeddings=False,
    num_segments=None,
    segment_ids=None,
    prefix="",
    **block_inputs,
):
    """The shared backbone: embeddings -> ``blocks`` -> final norm, on symbolic inputs.

    Args:
        token_ids: ``(B, L)`` int input (unused when ``embedded`` is given).
        blocks: the layers to stack (:func:`make_blocks` or the family's own); each is called
            as ``block(x, **block_inputs)``.
        vocab_size, d_model: size of the ``token_embedding`` table.
        max_length: rows of a learned position table.
        position: the builder's ``position=`` (its embedding side is applied here; give the
            score side to the blocks).
        dropout: rate of ``embedding_dropout`` (none for 0).
        norm_first: pre-norm stacks end with ``final_norm``; post-norm ones do not.
        tie_embeddings: the token embedding's reverse call is the output projection.
        embedded: ``(B, L, d)`` inputs already embedded (Decision Transformer); then
            ``token_embedding`` is None.
        embedding_norm: a norm (of kind ``norm``) after the token (+ position) embeddings.
        position_layer: a ready embedding-side position layer (ViT's 2D table) instead of the
            one ``position`` names.
        layer_norm_epsilon: of ``embedding_norm`` and ``final_norm``.
        norm: ``"layer"`` (LayerNormalization) or ``"rms"`` (RMSNormalization) for
            ``embedding_norm`` and ``final_norm``.
        scale_embeddings: multiply the token embeddings by ``sqrt(d_model)`` (Gemma), before
            the positions are added (part ``embedding_scale``).
        num_segments: rows of a learned segment (token type) table ``segment_embedding``
            (BERT); its embedding of ``segment_ids (B, L)`` is added after the positions.
        segment_ids: ``(B, L)`` int input (required with ``num_segments``).
        prefix: prepended to the layer names (``encoder_`` / ``decoder_`` in seq2seq).

    Returns:
        ``(hidden (B, L, d), parts)``: ``parts`` maps each name of :data:`PARTS` to its layer
        (None where absent; ``transformer_layers`` to the list of blocks).
    """
    embed_pos, _ = (None, None) if position_layer is not None else resolve_position(position)
    parts = dict.fromkeys(PARTS)
    if embedded is None:
        parts["token_embedding"] = keras.layers.ReversibleEmbedding(
            vocab_size,
            d_model,
            tie_weights=tie_embeddings,
            reverse_dtype=head_compute_dtype(),
            name=f"{prefix}token_embedding",
        )
        x = parts["token_embedding"](token_ids)  # (B, L, d)
        if scale_embeddings:
            parts["embedding_scale"] = ScaleEmbeddings(
                float(d_model) ** 0.5, name=f"{prefix}embedding_scale"
            )
            x = parts["embedding_scale"](x)  # (B, L, d)
    else:
        x = embedded
    parts["position_embedding"] = position_layer or embedding_position_layer(
        embed_pos, max_length, f"{prefix}position_embedding"
    )
    if parts["position_embedding"] is not None:
        x = parts["position_embedding"](x)  # (B, L, d)
    if num_segments:
        if segment_ids is None:
            raise ValueError(f"num_segments={num_segments}: pass segment_ids (B, L).")
        parts["segment_embedding"] = keras.layers.Embedding(
            int(num_segments), d_model, name=f"{prefix}segment_embedding"
        )
        x = keras.layers.Add(name=f"{prefix}add_segments")(
            [x, parts["segment_embedding"](segment_ids)]
        )  # (B, L, d)
    check_norm(norm)
    if embedding_norm:
        parts["embedding_norm"] = make_norm(norm, layer_norm_epsilon, f"{prefix}embedding_norm")
    if dropout:
        parts["embedding_dropout"] = keras.layers.Dropout(
            dropout, name=f"{prefix}embedding_dropout"
        )
    for part in ("embedding_norm", "embedding_dropout"):
        if parts[part] is not None:
            x = parts[part](x)  # (B, L, d)
    parts["transformer_layers"] = list(blocks)
    for block in parts["transformer_layers"]:
        x = block(x, **block_inputs)  # (B, L, d)
    if norm_first:
        parts["final_norm"] = make_norm(norm, layer_norm_epsilon, f"{prefix}final_norm")
        x = parts["final_norm"](x)
    return x, parts


def builder_arguments(arguments, drop=()):
    """A builder's ``locals()`` (taken first thing) as the model's config, less ``drop``."""
    return {key: value for key, value in arguments.items() if key not in drop}


def _serialize(value):
    """A builder argument as a JSON-able value (layer instances as Keras configs)."""
    if isinstance(value, keras.layers.Layer):
        return keras.saving.serialize_keras_object(value)
    return value


@keras.saving.register_keras_serializable(package="keras_transformers")
class BackboneModel(keras.Model):
    """Base of the model families: a Functional model built from its builder's arguments.

    Subclasses implement ``build_graph(**config) -> (inputs, outputs)``, usually by calling
    :meth:`assemble` (the shared embedding -> blocks -> final norm) and adding their head.
    ``get_config()`` returns ``config`` (layer instances serialized); ``from_config`` calls the
    constructor again, so a loaded model has the same class and part attributes.
    """

    default_name = "model"

    def __init__(self, name=None, trainable=True, dtype=None, quantized=None, **config):
        # kept outside Keras' attribute tracking: a core instance given as `attention` is a
        # template (each layer gets a fresh copy), not a sublayer of the model
        object.__setattr__(
            self, "_builder_config", {key: _serialize(value) for key, value in config.items()}
        )
        # every part is built under the model's dtype policy (the global one when not given),
        # so a mixed-precision model loads back mixed whatever the policy at load time
        policy = keras.config.dtype_policy() if dtype is None else keras.dtype_policies.get(dtype)
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            inputs, outputs = self.build_graph(**config)
        finally:
            keras.config.set_dtype_policy(previous)
        super().__init__(
            inputs=inputs,
            outputs=outputs,
            name=name or self.default_name,
            trainable=trainable,
            dtype=policy,
        )
        object.__setattr__(self, "_kt_graph_built", True)
        if quantized:
            self._restore_quantization(quantized)

    def _restore_quantization(self, quantized):
        """Re-quantize the layers ``model.quantize`` had quantized (``{layer path: policy}``).

        The graph is rebuilt in float from the builder's arguments; setting a built layer's
        quantized dtype policy makes Keras quantize it, so the saved int8 weights (kernel and
        scale) then load into the same variable layout.
        """
        layers = {layer.path: layer for layer in self._flatten_layers()}
        missing = sorted(set(quantized) - set(layers))
        if missing:
            raise ValueError(
                f"quantized: no layer at {missing[:3]} in the rebuilt {type(self).__name__}; the "
                "config does not match the model it was saved from."
            )
        for path, policy in quantized.items():
            layers[path].dtype_policy = keras.dtype_policies.deserialize(policy)

    def __setattr__(self, name, value):
        # The parts are set while the graph is built, before keras.Model.__init__; on the torch
        # backend a torch.nn.Module refuses sublayers before its own __init__. Every part is a
        # layer of the Functional graph, which tracks it, so a plain attribute is enough there.
        if keras.config.backend() == "torch" and not self.__dict__.get("_kt_graph_built"):
            return object.__setattr__(self, name, value)
        return super().__setattr__(name, value)

    def export(self, filepath, format="tf_saved_model", **kwargs):
        """Keras' ``Model.export``; ``format="onnx"`` goes through
        :func:`keras_transformers.models.export.export_onnx` (tf2onnx taught ``Erfc``; a core whose
        ops do not convert is named in an error)."""
        if format == "onnx":
            from keras_transformers.models.export import export_onnx

            return export_onnx(self, filepath, super().export, **kwargs)
        return super().export(filepath, format=format, **kwargs)

    def build_graph(self, **config):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement build_graph(**config).")

    # ----------------------------------------------------------------------------- assembly
    def assemble(self, token_ids, blocks, prefix="", **kwargs):
        """Run :func:`run_backbone` and keep its parts as attributes (``prefix`` + part name).

        Returns:
            the hidden states ``(B, L, d)`` after the final norm.
        """
        x, parts = run_backbone(token_ids, blocks, prefix=prefix, **kwargs)
        for part, layer in parts.items():
            setattr(self, prefix + part, layer)
        return x

    def assemble_stack(
        self,
        kind,
        token_ids,
        num_layers,
        d_model,
        num_heads,
        ff_dim=None,
        attention="full",
        position=None,
        dropout=0.0,
        activation="gelu",
        norm_first=True,
        num_key_value_heads=None,
        cross_attention=None,
        replace=None,
        final_norm=None,
        head_dim=None,
        norm="layer",
        use_bias=True,
        qk_norm=False,
        layer_norm_epsilon=None,
        feedforward="dense",
        num_experts=8,
        num_experts_per_token=2,
        router_aux_loss_weight=0.01,
        **backbone_args,
    ):
        """:func:`make_blocks` of ``kind`` then :meth:`assemble`: the usual builder stack.

        Args:
            kind: ``"encoder"`` or ``"decoder"`` blocks.
            token_ids: ``(B, L)`` int input (None with ``embedded=``).
            num_layers: number of blocks ``N``.
            d_model: model width ``d``.
            num_heads: attention heads ``h`` (``d_model / h`` per head).
            ff_dim: feed-forward width (``4·d_model`` by default).
            attention: the builder's ``attention=``; every block gets a fresh core.
            position: the builder's ``position=`` (embedding side here, score side in the
                blocks).
            dropout: embedding, residual and feed-forward dropout.
            activation: feed-forward activation.
            norm_first: pre-norm blocks and a ``final_norm``.
            num_key_value_heads: grouped key/value heads (None: one per query head).
            cross_attention: decoder blocks only (None leaves the block's default).
            replace: ``{index: layer}`` blocks to use instead of the generated ones.
            final_norm: end with ``final_norm`` (None: when ``norm_first``).
            head_dim: per-head size (None: ``d_model / h``).
            norm: ``"layer"`` or ``"rms"``: every block norm, ``embedding_norm`` and
                ``final_norm``.
            use_bias: biases of the attention projections and feed-forward layers.
            qk_norm: RMS-normalize each query and key head in the self-attention.
            layer_norm_epsilon: epsilon of every norm (None: the blocks' and backbone's
                default, ``1e-5``).
            feedforward: ``"dense"`` or ``"moe"`` (``kt.blocks.MixtureOfExperts`` with
                ``num_experts``, ``num_experts_per_token``, ``router_aux_loss_weight``).
            **backbone_args: the other arguments of :func:`run_backbone` and the blocks' call
                inputs (``padding_mask=...``).

        Returns:
            the hidden states ``(B, L, d)``.
        """
        _, score_pos = resolve_position(position)
        block_args = dict(norm_first=norm_first, dropout=dropout, activation=activation)
        block_args.update(norm=check_norm(norm), use_bias=bool(use_bias), qk_norm=bool(qk_norm))
        if feedforward != "dense":
            block_args.update(
                feedforward=feedforward,
                num_experts=num_experts,
                num_experts_per_token=num_experts_per_token,
                router_aux_loss_weight=router_aux_loss_weight,
            )
        if layer_norm_epsilon is not None:
            block_args["layer_norm_epsilon"] = backbone_args["layer_norm_epsilon"] = float(
                layer_norm_epsilon
            )
        if num_key_value_heads is not None:
            block_args["num_key_value_heads"] = num_key_value_heads
        if cross_attention is not None:
            block_args["cross_attention"] = cross_attention
        blocks = make_blocks(
            kind,
            num_layers,
            d_model,
            num_heads,
            ff_dim or 4 * d_model,
            attention,
            score_pos,
            head_dim=head_dim,
            **block_args,
        )
        for index, block in (replace or {}).items():
            blocks[index] = block
        return self.assemble(
            token_ids,
            blocks,
            d_model=d_model,
            position=position,
            dropout=dropout,
            norm_first=norm_first if final_norm is None else final_norm,
            norm=norm,
            **backbone_args,
        )

    # ----------------------------------------------------------------------------- config
    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": self.dtype_policy.name,
            **copy.deepcopy(self._builder_config),
        }
        # after model.quantize(...): which layers are quantized, so from_config rebuilds them so
        quantized = {
            layer.path: keras.dtype_policies.serialize(layer.dtype_policy)
            for layer in self._flatten_layers()
            if layer is not self and layer.quantization_mode is not None
        }
        if quantized:
            config["quantized"] = quantized
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        if all(key in config for key in ("layers", "input_layers", "output_layers")):
            # a file written before the shared backbone (DecoderLM held a Functional config):
            # it loads as a plain Functional model, without the part attributes
            return keras.Model.from_config(config, custom_objects=custom_objects)
        return cls(**config)
