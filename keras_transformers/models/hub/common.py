"""Source handling and weight copying shared by the keras-hub converters.

A converter (one module per family) reads a keras-hub ``Backbone``'s config and weights and
returns a :class:`Conversion`: the builder to call, its arguments and a ``{target: array}`` map
whose keys walk our model's part attributes (``"transformer_layers.0.self_attention.qkv_dense.
kernel"``). :func:`build_and_copy` builds the model (the converter's arguments updated by the
user's overrides), assigns every array whose target exists and has the same shape, and records
the rest in a :class:`ConversionReport`.
"""

import dataclasses
import json
import logging
import os

import keras
import numpy as np

logger = logging.getLogger("keras_transformers")


@dataclasses.dataclass
class Conversion:
    """What a family converter returns.

    Attributes:
        family: ``"gpt2"``, ``"llama"``, ...
        builder: ``"decoder_lm"`` (:func:`kt.models.build_decoder_lm`) or ``"text_encoder"``
            (:func:`kt.models.build_text_encoder`).
        arguments: the builder's keyword arguments that reproduce the source.
        weights: ``{target path: float32 array}`` in our layout.
        dropped: source weights with no counterpart in our model (e.g. BERT's pooler), by name.
    """

    family: str
    builder: str
    arguments: dict
    weights: dict
    dropped: list = dataclasses.field(default_factory=list)
    #: ``arguments -> arguments`` applied after the overrides (e.g. the attention that depends
    #: on the final ``max_length``), unless ``attention`` is overridden
    adjust: object = None
    #: targets (position tables) of which a model with fewer rows takes the first rows
    truncatable: tuple = ()
    #: ``(argument, keras-hub's value, value)`` set from a Hugging Face config.json where
    #: keras-hub's converter loses it
    corrections: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ConversionReport:
    """What :func:`kt.models.from_keras_hub` copied and what it left at initialization.

    Attributes:
        family: the source family.
        arguments: the builder arguments the model was built with (overrides included).
        overrides: the user's overrides.
        copied: target paths (part attributes) that received a source weight.
        new: variable paths of the returned model that did not (freshly initialized: train
            them).
        skipped: ``(target, reason)`` for the source weights that were not copied (the part is
            absent in the overridden model, or its shape changed).
        corrections: ``(argument, keras-hub's value, value)`` taken from a Hugging Face
            ``config.json`` where keras-hub's converter loses it (e.g. ``rms_norm_eps``).
    """

    family: str
    arguments: dict
    overrides: dict
    copied: list
    new: list
    skipped: list
    corrections: list = dataclasses.field(default_factory=list)

    @property
    def complete(self):
        """True when every variable of the model came from the source."""
        return not self.new

    def __str__(self):
        lines = [
            f"from_keras_hub: {self.family}, {len(self.copied)} weights copied, "
            f"{len(self.new)} new, {len(self.skipped)} source weights not copied"
        ]
        lines += [f"  new (initialized, not from the checkpoint): {path}" for path in self.new]
        lines += [f"  not copied: {target} ({reason})" for target, reason in self.skipped]
        return "\n".join(lines)


# ------------------------------------------------------------------------------- source
def load_backbone(source):
    """The keras-hub ``Backbone`` that ``source`` names.

    Args:
        source: a keras-hub ``Backbone``; a task (``CausalLM``, ``TextClassifier``, ...: its
            ``.backbone``); a preset handle (``"gpt2_base_en"``, ``"kaggle://..."``,
            ``"hf://..."``: keras-hub may download it); or a local directory, either a keras-hub
            preset (``config.json`` with ``registered_name``) or a Hugging Face checkpoint
            folder (``config.json`` + ``*.safetensors``), which keras-hub's own converters read.
    """
    import keras_hub

    if isinstance(source, keras_hub.models.Backbone):
        return source
    backbone = getattr(source, "backbone", None)
    if isinstance(backbone, keras_hub.models.Backbone):
        return backbone
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path) and not os.path.exists(os.path.join(path, "config.json")):
            raise ValueError(
                f"source={path!r}: the directory has no config.json; expected a keras-hub preset "
                "directory or a Hugging Face checkpoint folder (config.json + *.safetensors)."
            )
        return keras_hub.models.Backbone.from_preset(path)
    raise TypeError(
        f"source={source!r}: expected a keras_hub Backbone, a keras_hub task (with .backbone), "
        "a preset handle or a local preset / Hugging Face folder path."
    )


def source_weights(backbone):
    """``{variable path without the backbone's name: numpy array}`` of a keras-hub backbone."""
    prefix = backbone.name + "/"
    weights = {}
    for variable in backbone.weights:
        path = variable.path
        if path.startswith(prefix):
            path = path[len(prefix) :]
        weights[path] = np.asarray(keras.ops.convert_to_numpy(variable.value), "float32")
    return weights


def hugging_face_config(source):
    """The ``config.json`` of a Hugging Face checkpoint folder (it has ``model_type``), or None
    for any other source."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = os.path.join(os.fspath(source), "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        config = json.load(file)
    return config if "model_type" in config else None


#: Hugging Face config key -> our builder argument, where keras-hub 0.32's converter drops the
#: value (it builds Llama/Mistral/Mixtral/Gemma with its default ``eps = 1e-6`` whatever
#: ``rms_norm_eps`` says; BERT's ``layer_norm_eps``)
HF_EPSILON_KEYS = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon")


def hugging_face_corrections(conversion, hf_config):
    """Set the builder arguments that keras-hub's converter of ``hf_config`` loses, so the
    model computes what the Hugging Face model computes; returns ``[(argument, keras-hub's
    value, corrected value)]``."""
    changes = []
    for key in HF_EPSILON_KEYS:
        if key in hf_config and hf_config[key] is not None:
            value = float(hf_config[key])
            if value != conversion.arguments.get("layer_norm_epsilon"):
                changes.append(
                    ("layer_norm_epsilon", conversion.arguments.get("layer_norm_epsilon"), value)
                )
                conversion.arguments["layer_norm_epsilon"] = value
            break
    # BERT's hidden_act "gelu" is the exact GELU; keras-hub's BERT uses the tanh form
    act = {"gelu": "gelu", "gelu_new": "gelu_approximate", "gelu_pytorch_tanh": "gelu_approximate"}
    hidden_act = hf_config.get("hidden_act", hf_config.get("activation_function"))
    current = conversion.arguments.get("activation")
    if hidden_act in act and current in ("gelu", "gelu_approximate") and act[hidden_act] != current:
        changes.append(("activation", current, act[hidden_act]))
        conversion.arguments["activation"] = act[hidden_act]
    return changes


# ------------------------------------------------------------------------------- layouts
def merge_heads(kernel):
    """A per-head projection kernel ``(d, h, dh)`` (or bias ``(h, dh)``) as ``(d, h·dh)``."""
    return kernel.reshape(kernel.shape[:-2] + (-1,))


def fused_qkv(query, key, value):
    """Our fused self-attention projection: ``[q | k | v]`` along the last axis."""
    return np.concatenate([merge_heads(query), merge_heads(key), merge_heads(value)], axis=-1)


def attention_weights(block, query, key, value, output, biases=None):
    """Targets of one block's self-attention: ``query/key/value (d, h, dh)``, ``output (h·dh,
    d)`` (any shape with that size); ``biases = (bq, bk, bv, bo)`` or None."""
    prefix = f"transformer_layers.{block}.self_attention"
    weights = {
        f"{prefix}.qkv_dense.kernel": fused_qkv(query, key, value),
        f"{prefix}.output_dense.kernel": output.reshape(-1, output.shape[-1]),
    }
    if biases is not None:
        bq, bk, bv, bo = biases
        weights[f"{prefix}.qkv_dense.bias"] = fused_qkv(bq, bk, bv)
        weights[f"{prefix}.output_dense.bias"] = bo
    return weights


# ------------------------------------------------------------------------------- copying
def resolve(model, target):
    """The variable at ``target`` (``"a.0.b.kernel"``: attributes, list indices), or raise
    ``LookupError`` naming the missing step."""
    node = model
    for step in target.split("."):
        if isinstance(node, (list, tuple)):
            index = int(step)
            if index >= len(node):
                raise LookupError(f"{step} (only {len(node)})")
            node = node[index]
        else:
            value = getattr(node, step, None)
            if value is None:
                raise LookupError(step)
            node = value
    return node


def copy_weights(model, weights, truncatable=()):
    """Assign ``weights`` into ``model``: ``(copied targets, skipped (target, reason))``.

    A target of ``truncatable`` whose variable has fewer rows (a shorter ``max_length``) gets
    the first rows; the dropped rows are reported in ``skipped``.
    """
    copied, skipped = [], []
    for target, array in weights.items():
        try:
            variable = resolve(model, target)
        except LookupError as missing:
            skipped.append((target, f"the model has no {missing}"))
            continue
        rows = variable.shape[0]
        if (
            target in truncatable
            and rows < array.shape[0]
            and tuple(variable.shape[1:]) == array.shape[1:]
        ):
            skipped.append((target, f"rows {rows}..{array.shape[0] - 1} (max_length={rows})"))
            array = array[:rows]
        if tuple(variable.shape) != tuple(array.shape):
            skipped.append(
                (target, f"shape {tuple(array.shape)} -> {tuple(variable.shape)} in the model")
            )
            continue
        variable.assign(array.astype(keras.backend.standardize_dtype(variable.dtype)))
        copied.append(target)
    return copied, skipped


def build_and_copy(conversion, overrides, verbose=True):
    """Build ``conversion``'s model with ``overrides`` and copy the weights that fit.

    Returns:
        the model, with its :class:`ConversionReport` as ``model.conversion_report``.
    """
    from keras_transformers import models

    builders = {"decoder_lm": models.build_decoder_lm, "text_encoder": models.build_text_encoder}
    arguments = {**conversion.arguments, **overrides}
    if conversion.adjust is not None and "attention" not in overrides:
        arguments = conversion.adjust(arguments)
    model = builders[conversion.builder](**arguments)
    copied, skipped = copy_weights(model, conversion.weights, conversion.truncatable)
    assigned = set()
    for target in copied:
        assigned.add(id(resolve(model, target)))
    new = [variable.path for variable in model.weights if id(variable) not in assigned]
    skipped += [(name, "no counterpart in our model") for name in conversion.dropped]
    report = ConversionReport(
        family=conversion.family,
        arguments=arguments,
        overrides=dict(overrides),
        copied=copied,
        new=new,
        skipped=skipped,
        corrections=list(conversion.corrections),
    )
    # a plain attribute (not tracked by Keras): it describes this conversion, not the model
    object.__setattr__(model, "conversion_report", report)
    if verbose and (new or skipped):
        logger.warning("%s", report)
    return model
