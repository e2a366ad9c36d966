"""keras-hub tokenizers behind the package's tokenizer interface.

These wrap ``keras_hub.tokenizers`` (byte, unicode code point, WordPiece and SentencePiece BPE,
the last two trained on your corpus with keras-hub's vocabulary tools
``compute_word_piece_vocabulary`` / ``compute_sentence_piece_proto``) and map their ids onto the
package's reserved-id layout, so every tokenizer is interchangeable in the examples::

    0 = <pad>   1 = <bos>   2 = <eos>   3 = <unk>   (WordPiece adds 4 = [MASK])

``save``/``load`` write the vocabulary (WordPiece) or the SentencePiece model proto into the same
JSON file as the other tokenizers, so a reloaded tokenizer encodes exactly like the original.
Saved next to a checkpoint, the pair model + tokenizer is self-contained.

Example:
    >>> import keras_transformers as kt
    >>> texts = ["the cat sat on the mat", "the dog sat on the log"] * 50
    >>> tok = kt.data.WordPieceTokenizer.fit(texts, vocabulary_size=64)
    >>> tok.decode(tok.encode("the cat sat"))
    'the cat sat'
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_transformers.data.tokenizers import (
    BOS_ID,
    EOS_ID,
    NUM_SPECIAL_TOKENS,
    PAD_ID,
    UNK_ID,
    Tokenizer,
    _as_id_list,
)

#: Reserved WordPiece tokens, in the order of the package's reserved ids (+ ``[MASK]``).
WORDPIECE_RESERVED = ("[PAD]", "[BOS]", "[EOS]", "[UNK]", "[MASK]")
MASK_ID = 4

# keras-hub's SentencePiece trainer reserves pad=0, unk=1, bos=2, eos=3; the package uses
# pad=0, bos=1, eos=2, unk=3. The first four ids are permuted, the rest are unchanged.
_SP_TO_OURS = np.array([PAD_ID, UNK_ID, BOS_ID, EOS_ID], np.int32)


def _numpy(x) -> np.ndarray:
    """A tokenizer output (tf / numpy / backend tensor) as an int32 numpy array."""
    if hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x).astype(np.int32).reshape(-1)


def _text(x) -> str:
    if hasattr(x, "numpy"):
        x = x.numpy()
    if isinstance(x, np.ndarray):
        x = x.item()
    return x.decode("utf-8", errors="replace") if isinstance(x, bytes) else str(x)


def _detokenize(hub_layer, ids, offset: int = 0) -> str:
    """Text of the regular ids (reserved ids dropped), mapped back by ``- offset`` to the
    keras-hub layer's own ids."""
    ids = np.asarray([i for i in _as_id_list(ids) if i >= NUM_SPECIAL_TOKENS], np.int32)
    return _text(hub_layer.detokenize(ids - offset)) if ids.size else ""


def _dataset(texts: Sequence[str]):
    """keras-hub's trainers read a ``tf.data.Dataset`` of strings (a plain list means files)."""
    import tensorflow as tf

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("texts: the training corpus is empty (no non-blank string)")
    return tf.data.Dataset.from_tensor_slices(texts)


def _check_size(vocabulary_size: int, minimum: int) -> int:
    if int(vocabulary_size) < minimum:
        raise ValueError(f"vocabulary_size={vocabulary_size}: must be >= {minimum}")
    return int(vocabulary_size)


class HubByteTokenizer(Tokenizer):
    """UTF-8 bytes through ``keras_hub.tokenizers.ByteTokenizer``: id = byte + 4 (260 ids).

    Gives the same ids as :class:`ByteTokenizer` (the numpy one); use it where the keras-hub layer
    is wanted inside a ``tf.data`` pipeline (``tokenizer.hub_layer``).
    """

    def __init__(self):
        import keras_hub

        self.hub_layer = keras_hub.tokenizers.ByteTokenizer(lowercase=False)

    @property
    def vocabulary_size(self) -> int:
        return 256 + NUM_SPECIAL_TOKENS

    def _encode_ids(self, text: str) -> np.ndarray:
        return _numpy(self.hub_layer(text)) + NUM_SPECIAL_TOKENS

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return _detokenize(self.hub_layer, ids, offset=NUM_SPECIAL_TOKENS)

    def get_config(self) -> dict[str, Any]:
        return {}


class CodepointTokenizer(Tokenizer):
    """Unicode code points through ``keras_hub.tokenizers.UnicodeCodepointTokenizer``.

    id = code point + 4 for code points below ``max_codepoint``; higher ones become ``<unk>``.
    The default covers Latin-1 and Latin Extended-A/B (``U+0000..U+024F``, 596 ids).
    """

    def __init__(self, max_codepoint: int = 0x0250):
        import keras_hub

        self.max_codepoint = _check_size(max_codepoint, 128)
        self.hub_layer = keras_hub.tokenizers.UnicodeCodepointTokenizer(lowercase=False)

    @property
    def vocabulary_size(self) -> int:
        return self.max_codepoint + NUM_SPECIAL_TOKENS

    def _encode_ids(self, text: str) -> np.ndarray:
        points = _numpy(self.hub_layer(text))
        return np.where(points < self.max_codepoint, points + NUM_SPECIAL_TOKENS, UNK_ID).astype(
            np.int32
        )

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return _detokenize(self.hub_layer, ids, offset=NUM_SPECIAL_TOKENS)

    def get_config(self) -> dict[str, Any]:
        return {"max_codepoint": self.max_codepoint}


class WordPieceTokenizer(Tokenizer):
    """WordPiece sub-words: ``keras_hub.tokenizers.WordPieceTokenizer``.

    Train the vocabulary on your corpus with :meth:`fit` (keras-hub's
    ``compute_word_piece_vocabulary``). Ids 0-4 are ``[PAD] [BOS] [EOS] [UNK] [MASK]``.
    """

    def __init__(self, vocabulary: Sequence[str], lowercase: bool = False):
        import keras_hub

        vocabulary = list(vocabulary)
        if tuple(vocabulary[: len(WORDPIECE_RESERVED)]) != WORDPIECE_RESERVED:
            raise ValueError(
                f"vocabulary must start with the reserved tokens {list(WORDPIECE_RESERVED)}; "
                f"got {vocabulary[: len(WORDPIECE_RESERVED)]}"
            )
        self.vocabulary = vocabulary
        self.lowercase = bool(lowercase)
        self.hub_layer = keras_hub.tokenizers.WordPieceTokenizer(
            vocabulary=vocabulary, lowercase=self.lowercase, oov_token="[UNK]"
        )

    @classmethod
    def fit(
        cls, texts: Sequence[str], vocabulary_size: int = 2000, lowercase: bool = False
    ) -> WordPieceTokenizer:
        """Learn a vocabulary of at most ``vocabulary_size`` pieces from ``texts``."""
        import keras_hub

        size = _check_size(vocabulary_size, len(WORDPIECE_RESERVED) + 1)
        vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
            _dataset(texts),
            size,
            lowercase=lowercase,
            reserved_tokens=list(WORDPIECE_RESERVED),
        )
        return cls(vocabulary, lowercase=lowercase)

    @property
    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    def _encode_ids(self, text: str) -> np.ndarray:
        return _numpy(self.hub_layer(text))

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return _detokenize(self.hub_layer, ids)

    def get_config(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary, "lowercase": self.lowercase}


# SentencePiece's trainer skips lines longer than this (its ``max_sentence_length`` default).
SENTENCE_PIECE_MAX_BYTES = 4192


class BPETokenizer(Tokenizer):
    """Byte-pair-encoding sub-words: a SentencePiece BPE model trained with keras-hub.

    :meth:`fit` calls ``keras_hub.tokenizers.compute_sentence_piece_proto(model_type="bpe")``;
    encoding and decoding use ``keras_hub.tokenizers.SentencePieceTokenizer``. The trainer's
    reserved ids (pad 0, unk 1, bos 2, eos 3) are permuted to the package's (pad 0, bos 1, eos 2,
    unk 3); every other id is unchanged.
    """

    def __init__(self, proto: bytes | str):
        import keras_hub

        if isinstance(proto, str):  # base64 text, as stored by save()
            proto = base64.b64decode(proto.encode("ascii"))
        self.proto = bytes(proto)
        self.hub_layer = keras_hub.tokenizers.SentencePieceTokenizer(proto=self.proto)

    @classmethod
    def fit(cls, texts: Sequence[str], vocabulary_size: int = 2000) -> BPETokenizer:
        """Train a BPE model with ``vocabulary_size`` pieces on ``texts``."""
        import keras_hub

        size = _check_size(vocabulary_size, NUM_SPECIAL_TOKENS + 1)
        lengths = [len(t.encode("utf-8")) for t in texts if t and t.strip()]
        if lengths and min(lengths) > SENTENCE_PIECE_MAX_BYTES:
            raise ValueError(
                f"texts: every line is longer than SentencePiece's limit of "
                f"{SENTENCE_PIECE_MAX_BYTES} bytes (the shortest has {min(lengths)}), so BPE has "
                "nothing to train on; split the text into shorter lines, or use another "
                "tokenizer (byte, char, wordpiece)"
            )
        proto = keras_hub.tokenizers.compute_sentence_piece_proto(
            _dataset(texts), size, model_type="bpe"
        )
        return cls(proto)

    @property
    def vocabulary_size(self) -> int:
        return int(self.hub_layer.vocabulary_size())

    def _encode_ids(self, text: str) -> np.ndarray:
        ids = _numpy(self.hub_layer(text))
        return np.where(ids < NUM_SPECIAL_TOKENS, _SP_TO_OURS[np.minimum(ids, 3)], ids)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return _detokenize(self.hub_layer, ids)

    def get_config(self) -> dict[str, Any]:
        return {"proto": base64.b64encode(self.proto).decode("ascii")}


TOKENIZER_KINDS = ("byte", "char", "word", "hub_byte", "codepoint", "wordpiece", "bpe")


def train_tokenizer(kind: str, texts: Sequence[str], vocabulary_size: int = 2000) -> Tokenizer:
    """Make the tokenizer ``kind`` for ``texts`` (trained on them where it has a vocabulary).

    Args:
        kind: one of ``byte, char, word`` (the package's numpy tokenizers) or ``hub_byte,
            codepoint, wordpiece, bpe`` (keras-hub tokenizers).
        texts: the training corpus (list of strings).
        vocabulary_size: size of the learned vocabulary (``word``, ``wordpiece``, ``bpe``).
    """
    from keras_transformers.data.tokenizers import ByteTokenizer, CharTokenizer, WordTokenizer

    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        return CharTokenizer.fit("\n".join(texts))
    if kind == "word":
        return WordTokenizer.fit(list(texts), max_vocab=vocabulary_size)
    if kind == "hub_byte":
        return HubByteTokenizer()
    if kind == "codepoint":
        return CodepointTokenizer()
    if kind == "wordpiece":
        return WordPieceTokenizer.fit(texts, vocabulary_size)
    if kind == "bpe":
        return BPETokenizer.fit(texts, vocabulary_size)
    raise ValueError(f"tokenizer={kind!r}: allowed values are {', '.join(TOKENIZER_KINDS)}")
