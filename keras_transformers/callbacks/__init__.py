"""TensorBoard extras: attention maps and rollout as images, generated text, throughput,
hyper-parameters."""

from keras_transformers.callbacks.attention_maps import AttentionMapLogger, attention_rollout
from keras_transformers.callbacks.aux_schedule import AuxiliaryLossSchedule
from keras_transformers.callbacks.hparams import HParamsLogger
from keras_transformers.callbacks.rollout import RolloutLogger
from keras_transformers.callbacks.text_samples import TextSampleLogger, greedy_continue
from keras_transformers.callbacks.throughput import ThroughputLogger

__all__ = [
    "AttentionMapLogger",
    "AuxiliaryLossSchedule",
    "HParamsLogger",
    "RolloutLogger",
    "TextSampleLogger",
    "ThroughputLogger",
    "attention_rollout",
    "greedy_continue",
]
