"""Text-classification data: file loaders, a built-in task and padding helpers.

Loaders return ``(texts, labels, class_names)``: ``texts`` is a ``list[str]``,
``labels`` an int32 array of shape ``(N,)`` indexing into ``class_names``.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .text import _list_files, stdlib_dir, stdlib_docstrings
from .tokenizers import PAD_ID, Tokenizer

CLASSIFICATION_EXTENSIONS: tuple[str, ...] = (".csv", ".jsonl", ".tsv")

# Built-in task: stdlib "families" (paths relative to the stdlib folder, resolved
# like ``BUILTIN_TEXT_MODULES``) whose docstrings talk about clearly different
# things. All exist in every CPython 3.10+.
BUILTIN_CLASSIFICATION_FAMILIES: dict[str, tuple[str, ...]] = {
    "asyncio": ("asyncio", "concurrent", "selectors"),
    "email": ("email", "imaplib", "mailbox", "poplib", "smtplib"),
    "http": ("http", "urllib", "wsgiref"),
    "unittest": ("doctest", "unittest"),
}

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_MIN_SNIPPET_CHARS = 25
_MAX_SNIPPET_CHARS = 300


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: expected a file")


def _labels_to_ids(raw_labels: list[str], label_column: str) -> tuple[np.ndarray, list[str]]:
    """Map label strings to ids in ``[0, num_classes)`` (integers sorted numerically)."""
    unique = set(raw_labels)
    if all(re.fullmatch(r"-?\d+", label) for label in unique):
        class_names = sorted(unique, key=int)
    else:
        class_names = sorted(unique)
    if len(class_names) < 2:
        only = class_names[0] if class_names else ""
        raise ValueError(f"label column '{label_column}' has one class ({only!r}): need at least 2")
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.asarray([index[label] for label in raw_labels], dtype=np.int32)  # (N,)
    return labels, class_names


def _label_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _missing_column(column: str, kind: str, path: Path, found: Sequence[str], where: str) -> str:
    return f"{kind} column '{column}' not found in {path}{where}; columns found: {list(found)}"


def _read_delimited(
    path: Path, delimiter: str, text_column: str, label_column: str
) -> tuple[list[str], list[str]]:
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = reader.fieldnames or []
        for column, kind in ((text_column, "text"), (label_column, "label")):
            if column not in columns:
                raise ValueError(_missing_column(column, kind, path, columns, " (header row)"))
        texts, labels = [], []
        for row in reader:
            text, label = row.get(text_column), row.get(label_column)
            if text is None or label is None:
                raise ValueError(
                    f"{path}, line {reader.line_num}: row has fewer columns than the header "
                    f"{list(columns)}"
                )
            if not label.strip():
                raise ValueError(f"{path}, line {reader.line_num}: empty label")
            texts.append(text)
            labels.append(label.strip())
    return texts, labels


def _read_jsonl(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with path.open("r", encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line_number}: invalid JSON ({error})") from None
            if not isinstance(record, dict):
                raise ValueError(
                    f"{path}, line {line_number}: expected a JSON object, "
                    f"got {type(record).__name__}"
                )
            for column, kind in ((text_column, "text"), (label_column, "label")):
                if column not in record:
                    where = f", line {line_number}"
                    raise ValueError(_missing_column(column, kind, path, list(record), where))
            text = record[text_column]
            if not isinstance(text, str):
                raise ValueError(
                    f"{path}, line {line_number}: '{text_column}' must be a string, "
                    f"got {type(text).__name__}"
                )
            label = _label_text(record[label_column])
            if not label:
                raise ValueError(f"{path}, line {line_number}: empty label")
            texts.append(text)
            labels.append(label)
    return texts, labels


def load_classification_file(
    path: str | os.PathLike, text_column: str = "text", label_column: str = "label"
) -> tuple[list[str], np.ndarray, list[str]]:
    """Load a labelled text file: ``.csv``, ``.tsv`` (with a header row) or ``.jsonl``.

    The format is chosen by extension. Labels may be any strings (or numbers in
    JSONL); ``class_names`` are the distinct labels sorted (numerically when they
    are all integers, so labels ``0..K-1`` keep their ids). Rows keep file order.

    Args:
        path: the file.
        text_column: column / JSON key holding the text.
        label_column: column / JSON key holding the label.

    Returns:
        ``(texts, labels, class_names)``: ``list[str]`` of length N, int32 array of
        shape ``(N,)`` with values in ``[0, len(class_names))``, ``list[str]``.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: unsupported extension, empty file, missing column (the message
            lists the columns found), malformed line (the message names it), or
            fewer than 2 classes.
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix not in CLASSIFICATION_EXTENSIONS:
        raise ValueError(
            f"unsupported file extension {suffix or '(none)'!r} for {path}: "
            f"expected one of {', '.join(CLASSIFICATION_EXTENSIONS)}"
        )
    try:
        raw = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not valid UTF-8 text ({error})") from None
    if not raw.strip():
        raise ValueError(f"{path} is empty: expected a header row and labelled examples")
    if suffix == ".jsonl":
        texts, raw_labels = _read_jsonl(path, text_column, label_column)
    else:
        delimiter = "\t" if suffix == ".tsv" else ","
        texts, raw_labels = _read_delimited(path, delimiter, text_column, label_column)
    if not texts:
        raise ValueError(f"{path} is empty: no examples found")
    labels, class_names = _labels_to_ids(raw_labels, label_column)
    return texts, labels, class_names


def load_class_folders(
    directory: str | os.PathLike,
    extensions: Sequence[str] = (".txt",),
    seed: int | None = 0,
) -> tuple[list[str], np.ndarray, list[str]]:
    """Load a folder with one subfolder per class, one text file per example.

    ::

        directory/
            negative/ a.txt b.txt ...
            positive/ c.txt ...

    Args:
        directory: the root folder. Hidden subfolders/files are ignored.
        extensions: file suffixes read as examples.
        seed: examples are shuffled with this seed (so a tail validation split is
            not a single class); ``None`` keeps them grouped by class, files sorted.

    Returns:
        ``(texts, labels, class_names)`` with ``class_names`` the sorted subfolder
        names and ``labels`` an int32 array of shape ``(N,)``.

    Raises:
        FileNotFoundError: if ``directory`` does not exist.
        NotADirectoryError: if it is a file.
        ValueError: if it has no or only one class subfolder, or a class folder
            has no text files.
    """
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"{directory} does not exist")
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a folder: expected one subfolder per class")
    class_dirs = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"{directory} is empty: expected one subfolder per class")
    if len(class_dirs) < 2:
        raise ValueError(
            f"{directory} has 1 class folder ({class_dirs[0].name!r}): need at least 2, "
            "one subfolder per class"
        )
    texts: list[str] = []
    labels: list[int] = []
    for class_id, class_dir in enumerate(class_dirs):
        files = _list_files(class_dir, extensions)
        if not files:
            raise ValueError(
                f"class folder {class_dir} is empty: expected {', '.join(extensions)} files"
            )
        for file in files:
            try:
                texts.append(file.read_bytes().decode("utf-8-sig"))
            except UnicodeDecodeError as error:
                raise ValueError(f"{file} is not valid UTF-8 text ({error})") from None
            labels.append(class_id)
    class_names = [p.name for p in class_dirs]
    label_array = np.asarray(labels, dtype=np.int32)  # (N,)
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(texts))
        texts = [texts[i] for i in order]
        label_array = label_array[order]
    return texts, label_array, class_names


def _snippets(docstrings: Sequence[str]) -> list[str]:
    """Split docstrings into single-sentence snippets of prose (code examples skipped)."""
    snippets = []
    for doc in docstrings:
        for paragraph in re.split(r"\n\s*\n", doc):
            if ">>>" in paragraph:
                continue
            paragraph = " ".join(paragraph.split())
            for sentence in _SENTENCE_END.split(paragraph):
                if _MIN_SNIPPET_CHARS <= len(sentence) <= _MAX_SNIPPET_CHARS:
                    snippets.append(sentence)
    return snippets


def builtin_classification_pools() -> dict[str, list[str]]:
    """Return the unique snippets available per built-in class (sorted by class name).

    Snippets found in more than one family are dropped. Deterministic for a
    given Python version.
    """
    pools: dict[str, list[str]] = {}
    for name in sorted(BUILTIN_CLASSIFICATION_FAMILIES):
        modules = BUILTIN_CLASSIFICATION_FAMILIES[name]
        pools[name] = list(dict.fromkeys(_snippets(stdlib_docstrings(modules))))
    counts: dict[str, int] = {}
    for pool in pools.values():
        for snippet in pool:
            counts[snippet] = counts.get(snippet, 0) + 1
    return {name: [s for s in pool if counts[s] == 1] for name, pool in pools.items()}


def builtin_classification(
    num_examples: int = 2000, seed: int = 0
) -> tuple[list[str], np.ndarray, list[str]]:
    """A real 4-class text task shipped with Python (nothing is downloaded).

    Each example is one sentence taken from a standard-library docstring,
    labelled by the package family it comes from (``BUILTIN_CLASSIFICATION_FAMILIES``):
    ``asyncio`` (event loops, futures), ``email`` (messages, MIME, mailboxes),
    ``http`` (HTTP, URLs, WSGI) and ``unittest`` (tests, mocks, doctest).
    Classes are balanced (the first ``num_examples % 4`` classes get one extra),
    sentences are distinct, and the result is shuffled and deterministic for a
    given ``seed`` and Python version. About 2,650 examples are available (CPython 3.10-3.13).

    Args:
        num_examples: total number of examples.
        seed: random seed for the choice and order of the examples.

    Returns:
        ``(texts, labels, class_names)``: ``list[str]`` of length ``num_examples``,
        int32 array of shape ``(num_examples,)``, and
        ``["asyncio", "email", "http", "unittest"]``.

    Raises:
        ValueError: if ``num_examples`` is below 4 or above what this Python's
            stdlib provides (the message gives the maximum).
        RuntimeError: if the stdlib sources are not available.
    """
    pools = builtin_classification_pools()
    class_names = list(pools)
    num_classes = len(class_names)
    if any(not pool for pool in pools.values()):
        raise RuntimeError(
            f"standard-library sources not found under {stdlib_dir()}: "
            "builtin_classification() needs the stdlib .py files"
        )
    if num_examples < num_classes:
        raise ValueError(f"num_examples must be at least {num_classes}, got {num_examples}")
    per_class = [
        num_examples // num_classes + (1 if i < num_examples % num_classes else 0)
        for i in range(num_classes)
    ]
    smallest = min(len(pool) for pool in pools.values())
    if max(per_class) > smallest:
        raise ValueError(
            f"num_examples={num_examples} is too large: this Python's stdlib gives at most "
            f"{smallest * num_classes} balanced examples ({smallest} per class)"
        )
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    labels: list[int] = []
    for class_id, (name, count) in enumerate(zip(class_names, per_class)):
        pool = pools[name]
        chosen = rng.choice(len(pool), size=count, replace=False)
        texts.extend(pool[i] for i in chosen)
        labels.extend([class_id] * count)
    order = rng.permutation(len(texts))
    texts = [texts[i] for i in order]
    label_array = np.asarray(labels, dtype=np.int32)[order]  # (num_examples,)
    return texts, label_array, class_names


def encode_texts(
    tokenizer: Tokenizer, texts: Sequence[str], max_length: int, add_bos: bool = False
) -> np.ndarray:
    """Encode and pad/truncate texts to a fixed length.

    Args:
        tokenizer: any tokenizer from ``tokenizers`` (anything with ``encode``).
        texts: a list of strings (a single ``str`` is rejected).
        max_length: output length; longer texts keep their first ``max_length`` ids.
        add_bos: prepend ``<bos>`` (id 1) to every text (e.g. as a [CLS]-style token).

    Returns:
        int32 array of shape ``(N, max_length)``, padded with 0 (``<pad>``) on the right.
    """
    if isinstance(texts, str):
        raise TypeError("encode_texts expects a list of strings, got a single str")
    if max_length < 1:
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
    out = np.full((len(texts), max_length), PAD_ID, dtype=np.int32)  # (N, max_length)
    for row, text in enumerate(texts):
        ids = tokenizer.encode(text, add_bos=True) if add_bos else tokenizer.encode(text)
        ids = np.asarray(ids, dtype=np.int32)[:max_length]
        out[row, : len(ids)] = ids
    return out
