"""Model builders returning Functional ``keras.Model`` objects.

Every family but the Perceiver's is a :class:`BackboneModel` on the shared backbone
(:mod:`keras_transformers.models.backbone`), its parts kept as attributes.
"""

from keras_transformers.models.adaptive_depth import (
    EarlyExitClassifier,
    EarlyExitLM,
    EarlyExitPredictor,
    ExitAccuracy,
    ExitStack,
    MultiExitLoss,
    build_early_exit_classifier,
    build_early_exit_lm,
)
from keras_transformers.models.al_rfou import AlRfouLM, build_al_rfou_lm
from keras_transformers.models.backbone import BackboneModel
from keras_transformers.models.bert import (
    BertPretrainer,
    MaskedLMHead,
    VocabularyIds,
    build_bert_pretrainer,
    encoder_from_pretrainer,
    load_pretrained_encoder,
    mask_token_id_for,
    mask_tokens,
)
from keras_transformers.models.decision_transformer import (
    DecisionTransformer,
    InterleaveTokens,
    SelectModality,
    build_decision_transformer,
    evaluate_returns,
)
from keras_transformers.models.decoder_lm import DecoderLM, build_decoder_lm
from keras_transformers.models.encoder_classifier import (
    EncoderClassifier,
    TextEncoder,
    build_encoder_classifier,
    build_retrieval_classifier,
    build_text_encoder,
)
from keras_transformers.models.hub import from_keras_hub
from keras_transformers.models.image_transformer import (
    BitsPerDim,
    BlockRasterLocal2DAttention,
    ImageSampleLogger,
    ImageTransformer,
    build_image_transformer,
)
from keras_transformers.models.layers import PaddingMask, SequencePooling
from keras_transformers.models.lora import (
    enable_lora,
    load_lora_weights,
    merge_lora,
    save_lora_weights,
)
from keras_transformers.models.memorizing import (
    MemorizingDecoderBlock,
    MemorizingLM,
    build_memorizing_lm,
    segment_batches,
)
from keras_transformers.models.perceiver import (
    LastPositions,
    LearnedArray,
    PerceiverCrossAttention,
    PrefixCausalMask,
    build_perceiver,
    build_perceiver_ar,
    build_perceiver_io,
)
from keras_transformers.models.seq2seq import Seq2Seq, build_seq2seq
from keras_transformers.models.spalm import SPALMLM, build_spalm_datastore, build_spalm_lm
from keras_transformers.models.transformer_xl import TransformerXLLM, build_transformer_xl_lm
from keras_transformers.models.universal import (
    UniversalTransformerClassifier,
    UniversalTransformerLM,
    build_universal_transformer_classifier,
    build_universal_transformer_lm,
)
from keras_transformers.models.vit import (
    ClassToken,
    PatchEmbedding,
    SinusoidalPosition2D,
    VisionTransformer,
    build_vit,
    sinusoid_2d_table,
)

__all__ = [
    "enable_lora",
    "from_keras_hub",
    "load_lora_weights",
    "merge_lora",
    "save_lora_weights",
    "BackboneModel",
    "BertPretrainer",
    "DecisionTransformer",
    "EarlyExitClassifier",
    "EarlyExitLM",
    "EncoderClassifier",
    "MemorizingLM",
    "Seq2Seq",
    "TextEncoder",
    "TransformerXLLM",
    "UniversalTransformerClassifier",
    "UniversalTransformerLM",
    "VisionTransformer",
    "DecoderLM",
    "InterleaveTokens",
    "MaskedLMHead",
    "SelectModality",
    "VocabularyIds",
    "build_bert_pretrainer",
    "build_decision_transformer",
    "encoder_from_pretrainer",
    "evaluate_returns",
    "load_pretrained_encoder",
    "mask_token_id_for",
    "mask_tokens",
    "build_transformer_xl_lm",
    "SPALMLM",
    "AlRfouLM",
    "build_al_rfou_lm",
    "build_spalm_datastore",
    "build_spalm_lm",
    "MemorizingDecoderBlock",
    "build_memorizing_lm",
    "segment_batches",
    "ClassToken",
    "LastPositions",
    "LearnedArray",
    "PatchEmbedding",
    "PerceiverCrossAttention",
    "PrefixCausalMask",
    "SinusoidalPosition2D",
    "build_perceiver",
    "build_perceiver_ar",
    "build_perceiver_io",
    "build_vit",
    "sinusoid_2d_table",
    "EarlyExitPredictor",
    "ExitAccuracy",
    "ExitStack",
    "MultiExitLoss",
    "build_early_exit_classifier",
    "build_early_exit_lm",
    "build_universal_transformer_classifier",
    "build_universal_transformer_lm",
    "PaddingMask",
    "SequencePooling",
    "build_decoder_lm",
    "build_encoder_classifier",
    "build_retrieval_classifier",
    "build_text_encoder",
    "build_seq2seq",
    "BitsPerDim",
    "BlockRasterLocal2DAttention",
    "ImageSampleLogger",
    "ImageTransformer",
    "build_image_transformer",
]
