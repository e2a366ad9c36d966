"""Checkpoints in: keras-hub backbones, presets and Hugging Face folders into our builders.

``kt.models.from_keras_hub(source, **overrides)`` reads a keras-hub backbone (or a task, a preset
handle, a local preset directory, or a Hugging Face checkpoint folder, which keras-hub's own
converters read), maps its config to the arguments of our builder and its weights to our parts,
and returns our model: a :class:`~keras_transformers.models.DecoderLM` (token ids ``(B, L)`` ->
logits ``(B, L, V)``) for the decoder-only families, a
:class:`~keras_transformers.models.TextEncoder` for BERT.

Without overrides the model computes the source's function (float32 logits within 1e-4). With
overrides (``attention=``, ``position=``, sizes ...) the builder gets the changed arguments and
every weight whose part still exists with the same shape is copied; the others are listed in
``model.conversion_report`` (a :class:`ConversionReport`) and logged as a warning.

Families (one module each): GPT-2 (``gpt2``), Llama / Llama 3 / Mistral (``llama``), Gemma
(``gemma``), BERT (``bert``), Bloom (``bloom``), Mixtral (``mixtral``).

Example:
    >>> import keras_hub, keras_transformers as kt
    >>> hub = keras_hub.models.GPT2Backbone(vocabulary_size=50, num_layers=1, num_heads=2,
    ...                                     hidden_dim=8, intermediate_dim=16,
    ...                                     max_sequence_length=16)
    >>> lm = kt.models.from_keras_hub(hub)
    >>> lm.conversion_report.new
    []
"""

import importlib

from keras_transformers.models.hub.common import (
    Conversion,
    ConversionReport,
    build_and_copy,
    hugging_face_config,
    hugging_face_corrections,
    load_backbone,
    source_weights,
)
from keras_transformers.models.hub.export import to_keras_hub

__all__ = [
    "Conversion",
    "ConversionReport",
    "FAMILIES",
    "convert",
    "from_keras_hub",
    "to_keras_hub",
]

#: keras-hub backbone class name -> converter module of this package
FAMILIES = {
    "GPT2Backbone": "gpt2",
    "LlamaBackbone": "llama",
    "Llama3Backbone": "llama",
    "MistralBackbone": "llama",
    "GemmaBackbone": "gemma",
    "BertBackbone": "bert",
    "BloomBackbone": "bloom",
    "MixtralBackbone": "mixtral",
}


def family_module(backbone):
    """The converter module for ``backbone`` (its class or the nearest supported base)."""
    for cls in type(backbone).__mro__:
        if cls.__name__ in FAMILIES:
            return importlib.import_module(
                f"keras_transformers.models.hub.{FAMILIES[cls.__name__]}"
            )
    raise ValueError(
        f"{type(backbone).__name__}: no converter for this keras-hub backbone; supported: "
        + ", ".join(FAMILIES)
        + "."
    )


def convert(source):
    """The :class:`Conversion` (builder, arguments, weights in our layout) of ``source``.

    For a Hugging Face folder, the arguments keras-hub's converter loses are set from its
    ``config.json`` (see :func:`~keras_transformers.models.hub.common.hugging_face_corrections`).
    """
    backbone = load_backbone(source)
    conversion = family_module(backbone).convert(backbone, source_weights(backbone))
    hf_config = hugging_face_config(source)
    if hf_config is not None:
        conversion.corrections = hugging_face_corrections(conversion, hf_config)
    return conversion


def from_keras_hub(source, verbose=True, **overrides):
    """Our model with the weights of a keras-hub / Hugging Face checkpoint.

    Args:
        source: a keras-hub ``Backbone`` or task instance, a preset handle or name (keras-hub's
            ``Backbone.from_preset``; offline only for local directories), a local keras-hub
            preset directory, or a Hugging Face checkpoint folder (``config.json`` +
            ``*.safetensors``).
        verbose: log the report (warning level) when some weights are new or not copied.
        **overrides: builder arguments that replace the converted ones, e.g.
            ``attention={"name": "sliding_window", "window": 64}``, ``position="alibi"``,
            ``max_length=512``, ``dropout=0.0``, ``name="my_lm"``.

    Returns:
        :class:`~keras_transformers.models.DecoderLM` (decoder-only families) or
        :class:`~keras_transformers.models.TextEncoder` (BERT, ``pooling="cls"``: the first
        token's final hidden state), with ``model.conversion_report`` (a
        :class:`ConversionReport`: ``copied``, ``new``, ``skipped``). The report is an attribute
        of the returned object only; it is not saved in a ``.keras`` file.
    """
    return build_and_copy(convert(source), overrides, verbose=verbose)
