"""Data layer: real built-in text, file loaders, tokenizers and generated tasks.

The loaders and task generators are pure Python + numpy and return arrays that ``model.fit()``
accepts on the TensorFlow, JAX and PyTorch Keras backends; ``lm_dataset`` /
``classification_dataset`` / ``seq2seq_dataset`` wrap them into ``tf.data`` or
``keras.utils.PyDataset`` pipelines. Tokenizers: the package's numpy byte/char/word ones and
keras-hub's byte, code point, WordPiece and SentencePiece-BPE ones (``hub_tokenizers``).
Token ids 0-3 are reserved everywhere: ``0=<pad> 1=<bos> 2=<eos> 3=<unk>``.
"""

from .classification import (
    BUILTIN_CLASSIFICATION_FAMILIES,
    builtin_classification,
    encode_texts,
    load_class_folders,
    load_classification_file,
)
from .gridworld import GridWorld, TrajectoryDataset, generate_dataset, make_windows, returns_to_go
from .hub_tokenizers import (
    MASK_ID,
    TOKENIZER_KINDS,
    WORDPIECE_RESERVED,
    BPETokenizer,
    CodepointTokenizer,
    HubByteTokenizer,
    WordPieceTokenizer,
    train_tokenizer,
)
from .images import load_digits, load_image_folder
from .lra import (
    LISTOPS_VOCAB,
    associative_recall,
    byte_text_classification,
    document_retrieval,
    listops,
)
from .pipelines import classification_dataset, lm_dataset, make_pipeline, seq2seq_dataset
from .recall import make_recall_streams, recall_vocabulary_size
from .seq2seq import encode_pairs, load_tsv_pairs
from .streams import make_segment_streams, stream_position
from .tasks import (
    ArithmeticTask,
    arithmetic_task,
    contains_both_task,
    copy_task,
    reverse_task,
    sort_task,
)
from .text import BUILTIN_TEXT_MODULES, builtin_text, load_text, make_lm_windows, train_val_split
from .tokenizers import (
    BOS_ID,
    EOS_ID,
    NUM_SPECIAL_TOKENS,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    ByteTokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    load_tokenizer,
)

__all__ = [
    "make_recall_streams",
    "recall_vocabulary_size",
    "GridWorld",
    "TrajectoryDataset",
    "generate_dataset",
    "make_windows",
    "returns_to_go",
    "make_segment_streams",
    "stream_position",
    "load_digits",
    "load_image_folder",
    "BPETokenizer",
    "CodepointTokenizer",
    "HubByteTokenizer",
    "MASK_ID",
    "TOKENIZER_KINDS",
    "WORDPIECE_RESERVED",
    "WordPieceTokenizer",
    "classification_dataset",
    "lm_dataset",
    "make_pipeline",
    "seq2seq_dataset",
    "train_tokenizer",
    "LISTOPS_VOCAB",
    "associative_recall",
    "byte_text_classification",
    "document_retrieval",
    "listops",
    "ArithmeticTask",
    "BOS_ID",
    "BUILTIN_CLASSIFICATION_FAMILIES",
    "BUILTIN_TEXT_MODULES",
    "ByteTokenizer",
    "CharTokenizer",
    "EOS_ID",
    "NUM_SPECIAL_TOKENS",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "Tokenizer",
    "UNK_ID",
    "WordTokenizer",
    "arithmetic_task",
    "builtin_classification",
    "builtin_text",
    "contains_both_task",
    "copy_task",
    "encode_pairs",
    "encode_texts",
    "load_class_folders",
    "load_classification_file",
    "load_text",
    "load_tokenizer",
    "load_tsv_pairs",
    "make_lm_windows",
    "reverse_task",
    "sort_task",
    "train_val_split",
]
