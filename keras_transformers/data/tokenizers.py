"""Small, dependency-free tokenizers (numpy in, numpy out).

All tokenizers share the same four reserved ids::

    0 = <pad>   1 = <bos>   2 = <eos>   3 = <unk>

Regular tokens start at id 4. ``encode`` returns an int32 array of shape ``(T,)``;
``decode`` drops the reserved ids. Tokenizers are saved as JSON and a reloaded
tokenizer encodes and decodes exactly like the original.
"""

from __future__ import annotations

import collections
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
UNK_ID = 3
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)

_WORD_PATTERN = re.compile(r"\w+|[^\w\s]")


def _as_id_list(ids: Sequence[int] | np.ndarray) -> list[int]:
    array = np.asarray(ids)
    if array.ndim != 1:
        raise ValueError(f"decode expects a 1-D sequence of ids, got shape {array.shape}")
    return [int(i) for i in array]


def _with_specials(ids: np.ndarray, add_bos: bool, add_eos: bool) -> np.ndarray:
    parts = [np.asarray([BOS_ID], np.int32)] if add_bos else []
    parts.append(np.asarray(ids, dtype=np.int32).reshape(-1))
    if add_eos:
        parts.append(np.asarray([EOS_ID], np.int32))
    return np.concatenate(parts).astype(np.int32, copy=False)


class Tokenizer:
    """Base class: reserved ids, JSON save/load and the shared API.

    Subclasses implement ``_encode_ids``, ``decode``, ``vocabulary_size`` and
    ``get_config``.
    """

    #: every subclass by class name, so ``Tokenizer.load`` can rebuild any saved tokenizer
    _classes: dict[str, type] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Tokenizer._classes[cls.__name__] = cls

    pad_id = PAD_ID
    bos_id = BOS_ID
    eos_id = EOS_ID
    unk_id = UNK_ID
    special_tokens = SPECIAL_TOKENS

    @property
    def vocabulary_size(self) -> int:
        """Number of ids, reserved ids included (ids are in ``[0, vocabulary_size)``)."""
        raise NotImplementedError

    def _encode_ids(self, text: str) -> np.ndarray:
        """Return the ids of ``text`` as an int32 array, shape ``(T,)``, no bos/eos."""
        raise NotImplementedError

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> np.ndarray:
        """Encode ``text`` to an int32 array of ids, shape ``(T,)``.

        Args:
            text: the string to encode.
            add_bos: prepend ``<bos>`` (id 1).
            add_eos: append ``<eos>`` (id 2).
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        return _with_specials(self._encode_ids(text), add_bos, add_eos)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Decode a 1-D sequence of ids back to text, skipping reserved ids."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """Return the JSON-serialisable constructor arguments."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Tokenizer:
        """Rebuild a tokenizer from ``get_config()`` output."""
        return cls(**config)

    def save(self, path: str | os.PathLike) -> None:
        """Save the tokenizer to a JSON file at ``path`` (parent folders are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"class_name": type(self).__name__, "config": self.get_config()}
        path.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Load a tokenizer saved with ``save``.

        Called on ``Tokenizer`` it returns whichever tokenizer class was saved;
        called on a subclass it checks that the file holds that class.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if the file is not a saved tokenizer (or the wrong class).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            class_name = payload["class_name"]
            config = payload["config"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                f"{path} is not a saved tokenizer: expected JSON with 'class_name' and 'config'"
            ) from None
        classes = Tokenizer._classes
        if class_name not in classes:
            raise ValueError(
                f"{path} holds unknown tokenizer class {class_name!r}; known: {sorted(classes)}"
            )
        target = classes[class_name]
        if cls is not Tokenizer and not issubclass(target, cls):
            raise ValueError(f"{path} holds a {class_name}, not a {cls.__name__}")
        return target.from_config(config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocabulary_size={self.vocabulary_size})"


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load any tokenizer saved with ``save`` (same as ``Tokenizer.load``)."""
    return Tokenizer.load(path)


class ByteTokenizer(Tokenizer):
    """UTF-8 byte-level tokenizer: needs no fitting and never produces ``<unk>``.

    Ids: 0-3 reserved, then byte value ``b`` has id ``b + 4`` (ids 4..259), so
    ``vocabulary_size`` is 260. Decoding replaces invalid UTF-8 with U+FFFD.
    """

    @property
    def vocabulary_size(self) -> int:
        """Always 260 (4 reserved ids + 256 byte values)."""
        return NUM_SPECIAL_TOKENS + 256

    def _encode_ids(self, text: str) -> np.ndarray:
        raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)  # (num_bytes,)
        return raw.astype(np.int32) + NUM_SPECIAL_TOKENS

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Decode ids to text; reserved and out-of-range ids are skipped."""
        values = bytes(
            i - NUM_SPECIAL_TOKENS
            for i in _as_id_list(ids)
            if NUM_SPECIAL_TOKENS <= i < self.vocabulary_size
        )
        return values.decode("utf-8", errors="replace")

    def get_config(self) -> dict[str, Any]:
        """Return ``{}``: the byte tokenizer has no settings."""
        return {}


class CharTokenizer(Tokenizer):
    """Character (Unicode code point) tokenizer with a fitted vocabulary.

    Ids: 0-3 reserved, then ``chars[i]`` has id ``i + 4``. Characters outside the
    vocabulary encode to ``<unk>`` (3).

    Args:
        chars: the vocabulary characters in id order (a string such as
            ``"0123456789+-="`` works), each a single, distinct character.
    """

    def __init__(self, chars: Iterable[str]):
        chars = list(chars)
        for char in chars:
            if not isinstance(char, str) or len(char) != 1:
                raise ValueError(f"each vocabulary entry must be one character, got {char!r}")
        if len(set(chars)) != len(chars):
            duplicates = sorted(c for c, n in collections.Counter(chars).items() if n > 1)
            raise ValueError(f"duplicate characters in vocabulary: {duplicates!r}")
        self.chars: list[str] = chars
        self._index = {char: i + NUM_SPECIAL_TOKENS for i, char in enumerate(chars)}

    @classmethod
    def fit(cls, text: str, max_vocab: int | None = None) -> CharTokenizer:
        """Build a vocabulary from the characters of ``text``, most frequent first.

        Ties are broken by code point, so fitting is deterministic.

        Args:
            text: training text.
            max_vocab: maximum ``vocabulary_size`` *including* the 4 reserved ids
                (must be > 4); rarer characters become ``<unk>``. ``None`` keeps all.
        """
        if not isinstance(text, str):
            raise TypeError(f"fit expects a str, got {type(text).__name__}")
        if max_vocab is not None and max_vocab <= NUM_SPECIAL_TOKENS:
            raise ValueError(
                f"max_vocab must be > {NUM_SPECIAL_TOKENS} (the reserved ids), got {max_vocab}"
            )
        counts = collections.Counter(text)
        chars = sorted(counts, key=lambda c: (-counts[c], c))
        if max_vocab is not None:
            chars = chars[: max_vocab - NUM_SPECIAL_TOKENS]
        return cls(chars)

    @property
    def vocabulary_size(self) -> int:
        """``len(chars) + 4``."""
        return len(self.chars) + NUM_SPECIAL_TOKENS

    def _encode_ids(self, text: str) -> np.ndarray:
        index = self._index
        return np.fromiter((index.get(c, UNK_ID) for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Decode ids to text; reserved (including ``<unk>``) and unknown ids are skipped."""
        chars = self.chars
        offset = NUM_SPECIAL_TOKENS
        return "".join(
            chars[i - offset] for i in _as_id_list(ids) if offset <= i < len(chars) + offset
        )

    def get_config(self) -> dict[str, Any]:
        """Return ``{"chars": [...]}``."""
        return {"chars": list(self.chars)}


class WordTokenizer(Tokenizer):
    """Lower-cased word-level tokenizer for classification.

    Text is split with the regex ``\\w+|[^\\w\\s]`` (words and single punctuation
    marks). Ids: 0-3 reserved, then ``words[i]`` has id ``i + 4``; words outside
    the vocabulary encode to ``<unk>`` (3).

    Args:
        words: vocabulary words in id order, distinct.
        lowercase: lower-case text before splitting.
    """

    def __init__(self, words: Iterable[str], lowercase: bool = True):
        words = list(words)
        if len(set(words)) != len(words):
            raise ValueError("duplicate words in vocabulary")
        self.words: list[str] = words
        self.lowercase = bool(lowercase)
        self._index = {word: i + NUM_SPECIAL_TOKENS for i, word in enumerate(words)}

    @classmethod
    def fit(
        cls, texts: Iterable[str], max_vocab: int | None = 20_000, lowercase: bool = True
    ) -> WordTokenizer:
        """Build a vocabulary from ``texts``, most frequent words first (ties alphabetical).

        Args:
            texts: training texts (an iterable of ``str``; a single ``str`` is rejected).
            max_vocab: maximum ``vocabulary_size`` *including* the 4 reserved ids
                (must be > 4). ``None`` keeps every word.
            lowercase: lower-case text before splitting.
        """
        if isinstance(texts, str):
            raise TypeError("fit expects an iterable of texts, got a single str; wrap it in a list")
        if max_vocab is not None and max_vocab <= NUM_SPECIAL_TOKENS:
            raise ValueError(
                f"max_vocab must be > {NUM_SPECIAL_TOKENS} (the reserved ids), got {max_vocab}"
            )
        counts: collections.Counter[str] = collections.Counter()
        for text in texts:
            if lowercase:
                text = text.lower()
            counts.update(_WORD_PATTERN.findall(text))
        words = sorted(counts, key=lambda w: (-counts[w], w))
        if max_vocab is not None:
            words = words[: max_vocab - NUM_SPECIAL_TOKENS]
        return cls(words, lowercase=lowercase)

    @property
    def vocabulary_size(self) -> int:
        """``len(words) + 4``."""
        return len(self.words) + NUM_SPECIAL_TOKENS

    def tokenize(self, text: str) -> list[str]:
        """Split ``text`` into (lower-cased) word and punctuation tokens."""
        if self.lowercase:
            text = text.lower()
        return _WORD_PATTERN.findall(text)

    def _encode_ids(self, text: str) -> np.ndarray:
        index = self._index
        return np.asarray([index.get(t, UNK_ID) for t in self.tokenize(text)], dtype=np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Decode ids to space-separated tokens, skipping reserved and unknown ids."""
        words = self.words
        offset = NUM_SPECIAL_TOKENS
        return " ".join(
            words[i - offset] for i in _as_id_list(ids) if offset <= i < len(words) + offset
        )

    def get_config(self) -> dict[str, Any]:
        """Return ``{"words": [...], "lowercase": bool}``."""
        return {"words": list(self.words), "lowercase": self.lowercase}
