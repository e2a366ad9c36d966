"""Vanilla encoder-decoder Transformer (Vaswani et al., 2017, "Attention is all you need").

``encoder_token_ids (B, Ls) -> N_enc x encoder block``; ``decoder_token_ids (B, Lt) -> N_dec x
(causal self-attention + cross-attention over the encoder) -> logits (B, Lt, V_tgt)``. Token id 0
is padding in both streams. :meth:`Seq2Seq.generate` decodes with self-attention and
cross-attention caches (:mod:`keras_transformers.generation.seq2seq`).
"""

import keras

from keras_transformers.models.backbone import BackboneModel, check_model_sizes
from keras_transformers.models.layers import PaddingMask


@keras.saving.register_keras_serializable(package="keras_transformers")
class Seq2Seq(BackboneModel):
    """Encoder-decoder Transformer: two stacks of the shared backbone and a Dense head.

    ``Seq2Seq(**config)`` with the arguments of :func:`build_seq2seq`. Parts: the backbone's
    with the prefixes ``encoder_`` and ``decoder_`` (``encoder_token_embedding``,
    ``encoder_transformer_layers``, ``encoder_final_norm``, ``decoder_token_embedding``,
    ``decoder_transformer_layers`` (with cross-attention), ``decoder_final_norm``, ...) plus
    ``output_head``.
    """

    default_name = "seq2seq"

    def build_graph(
        self,
        src_vocab_size,
        tgt_vocab_size,
        src_length,
        tgt_length,
        num_encoder_layers,
        num_decoder_layers,
        **config,
    ):
        enc_ids = keras.Input(shape=(src_length,), dtype="int32", name="encoder_token_ids")
        dec_ids = keras.Input(shape=(tgt_length,), dtype="int32", name="decoder_token_ids")
        enc_mask = PaddingMask(name="encoder_padding_mask")(enc_ids)  # (B, Ls)
        dec_mask = PaddingMask(name="decoder_padding_mask")(dec_ids)  # (B, Lt)
        encoded = self.assemble_stack(
            "encoder",
            enc_ids,
            num_layers=num_encoder_layers,
            prefix="encoder_",
            vocab_size=src_vocab_size,
            max_length=src_length,
            padding_mask=enc_mask,
            **config,
        )  # (B, Ls, d)
        decoded = self.assemble_stack(
            "decoder",
            dec_ids,
            num_layers=num_decoder_layers,
            cross_attention=True,
            prefix="decoder_",
            vocab_size=tgt_vocab_size,
            max_length=tgt_length,
            encoder_outputs=encoded,
            padding_mask=dec_mask,
            encoder_padding_mask=enc_mask,
            **config,
        )  # (B, Lt, d)
        self.output_head = keras.layers.Dense(tgt_vocab_size, dtype="float32", name="logits")
        inputs = {"encoder_token_ids": enc_ids, "decoder_token_ids": dec_ids}
        return inputs, self.output_head(decoded)  # (B, Lt, V_tgt)

    def generator(self, use_cache=None, jit=True):
        """The :class:`kt.generation.Seq2SeqGenerator` of this model (one per setting)."""
        from keras_transformers.generation.seq2seq import Seq2SeqGenerator

        generators = self.__dict__.setdefault("_kt_generators", {})
        key = (use_cache, bool(jit))
        if key not in generators:
            generators[key] = Seq2SeqGenerator(self, jit=jit, use_cache=use_cache)
        return generators[key]

    def generate(
        self,
        source_ids,
        max_length,
        sampler="greedy",
        start_token_id=None,
        decoder_prompt=None,
        stop_token_ids=None,
        suppress_token_ids=None,
        use_cache=None,
        jit=True,
    ):
        """Decode targets for ``source_ids (B, Ls)`` with a ``keras_hub`` sampler.

        The source is encoded once; every decoder block keeps a self-attention cache and a
        cross-attention cache (the encoder output's keys and values, projected once), so each
        token is one single-position decoder pass (:class:`kt.generation.Seq2SeqGenerator`).

        Args:
            source_ids: ``(B, Ls)`` int (0 = padding).
            max_length: output length, decoder prompt included (at most ``tgt_length``).
            sampler: ``"greedy"``, ``"beam"``, ``"top_k"``, ... or a ``keras_hub.samplers``
                instance (``BeamSampler(num_beams=4)``).
            start_token_id: the decoder starts from this token (``<bos>``); or
            decoder_prompt: ``(B, L0)`` decoder prefix (right-padded with 0).
            stop_token_ids: stop once every row produced one of these (``<eos>``).
            suppress_token_ids: ids never generated (``<pad>``, ``<bos>``).
            use_cache: True/False/None (None: cache when every decoder block can; False is the
                uncached reference: the whole model for every token).
            jit: compile the loop.

        Returns:
            int32 numpy ``(B, max_length)``: decoder prompt and generated tokens.
        """
        return self.generator(use_cache, jit).generate(
            source_ids,
            max_length,
            sampler=sampler,
            start_token_id=start_token_id,
            decoder_prompt=decoder_prompt,
            stop_token_ids=stop_token_ids,
            suppress_token_ids=suppress_token_ids,
        )


def build_seq2seq(
    src_vocab_size,
    tgt_vocab_size,
    src_length,
    tgt_length,
    d_model=128,
    num_heads=4,
    num_encoder_layers=2,
    num_decoder_layers=2,
    ff_dim=None,
    attention="full",
    position="learned",
    dropout=0.1,
    activation="gelu",
    norm_first=True,
    name="seq2seq",
):
    """Build a Functional encoder-decoder model.

    ``attention`` sets the encoder self-attention and the decoder self-attention cores (decoder
    cross-attention stays full). ``position`` as in the other builders.

    Returns:
        :class:`Seq2Seq`: ``{"encoder_token_ids": (B, Ls), "decoder_token_ids": (B, Lt)} ->
        logits (B, Lt, V_tgt)``. Train with teacher forcing on shifted targets.
    """
    config = dict(locals())
    check_model_sizes(d_model, num_heads, max(num_encoder_layers, num_decoder_layers))
    return Seq2Seq(**config)
