"""Memory for longer context: segment recurrence, compressive memory, kNN memory."""

from keras_transformers.memory.compressive import (
    COMPRESSIONS,
    CompressiveTransformerBlock,
    MemoryCompressor,
)
from keras_transformers.memory.knn import KNNMemory, top_k_search
from keras_transformers.memory.knn_lm import (
    KNNLM,
    build_knn_datastore,
    build_knn_lm,
    knn_lm_log_probs,
)
from keras_transformers.memory.memorizing import (
    KNNAugmentedAttention,
    KNNMemoryReset,
    clear_memories,
    knn_memories,
)
from keras_transformers.memory.segment import SegmentDocuments, TransformerXLBlock
from keras_transformers.memory.spalm import EpisodicMemory, SPALMGate
from keras_transformers.memory.state import (
    MemoryReset,
    StatefulMemory,
    memory_layers,
    reset_memory,
)

__all__ = [
    "COMPRESSIONS",
    "CompressiveTransformerBlock",
    "MemoryCompressor",
    "MemoryReset",
    "SegmentDocuments",
    "StatefulMemory",
    "TransformerXLBlock",
    "memory_layers",
    "reset_memory",
    "KNNLM",
    "KNNAugmentedAttention",
    "KNNMemory",
    "KNNMemoryReset",
    "build_knn_datastore",
    "build_knn_lm",
    "clear_memories",
    "knn_lm_log_probs",
    "knn_memories",
    "top_k_search",
    "EpisodicMemory",
    "SPALMGate",
]
