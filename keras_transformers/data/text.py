"""Plain-text corpora and language-modelling windows.

Everything here is pure Python + numpy: functions take and return ``str`` or
``np.ndarray`` values, so the results can be passed straight to ``model.fit()``
on any Keras backend (TensorFlow, JAX or PyTorch).
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Standard-library modules whose docstrings make up the built-in corpus.
# Entries are paths relative to the stdlib folder, without the ``.py`` suffix:
# each resolves to ``<name>.py`` when that file exists, otherwise to every
# ``.py`` file of the ``<name>/`` package (test folders excluded). All of them
# exist in every CPython 3.10+ (some moved from a module to a package, which the
# resolution above handles). Kept sorted so the corpus order is fixed.
BUILTIN_TEXT_MODULES: tuple[str, ...] = (
    "argparse",
    "asyncio",
    "calendar",
    "collections",
    "concurrent",
    "configparser",
    "contextlib",
    "csv",
    "dataclasses",
    "difflib",
    "email",
    "fractions",
    "ftplib",
    "functools",
    "gettext",
    "heapq",
    "http",
    "imaplib",
    "inspect",
    "json",
    "logging",
    "mailbox",
    "os",
    "pathlib",
    "pickle",
    "pydoc",
    "random",
    "shutil",
    "smtplib",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "urllib",
    "xml",
    "zipfile",
)

_TEXT_SUFFIXES = (".txt", ".md", ".py")
_SKIPPED_FOLDERS = frozenset({"test", "tests", "idle_test", "__pycache__"})


def stdlib_dir() -> Path:
    """Return the folder holding the running Python's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def _module_files(root: Path, name: str) -> list[Path]:
    """Resolve a stdlib module name to its ``.py`` files (sorted, tests skipped)."""
    single = root / f"{name}.py"
    if single.is_file():
        return [single]
    package = root / name
    if not package.is_dir():
        return []
    files = []
    for path in package.rglob("*.py"):
        parts = path.relative_to(root).parts
        if _SKIPPED_FOLDERS.intersection(parts):
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _file_docstrings(path: Path) -> list[str]:
    """Return the cleaned module/class/function docstrings of one file, in source order.

    Files that cannot be read, decoded or parsed give an empty list.
    """
    try:
        source = path.read_bytes().decode("utf-8")
        tree = ast.parse(source, filename=str(path))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError):
        return []
    docs: list[str] = []
    doc_nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)

    def visit(node: ast.AST) -> None:
        if isinstance(node, doc_nodes):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                doc = inspect.cleandoc(doc)
                if doc:
                    docs.append(doc)
        for child in ast.iter_child_nodes(node):
            visit(child)

    try:
        visit(tree)
    except RecursionError:
        return []
    return docs


@functools.cache
def stdlib_docstrings(modules: tuple[str, ...]) -> tuple[str, ...]:
    """Return the unique docstrings of the given stdlib modules, in a fixed order.

    Args:
        modules: module names relative to the stdlib folder (see
            ``BUILTIN_TEXT_MODULES``). Missing modules are skipped.

    Returns:
        A tuple of cleaned docstrings (``inspect.cleandoc``), in module order then
        source order, exact duplicates removed. Cached per argument.
    """
    root = stdlib_dir()
    seen: set[str] = set()
    docs: list[str] = []
    for name in modules:
        for path in _module_files(root, name):
            for doc in _file_docstrings(path):
                if doc not in seen:
                    seen.add(doc)
                    docs.append(doc)
    return tuple(docs)


def builtin_text(max_chars: int | None = 200_000, seed: int | None = 0) -> str:
    """Build a real English corpus from the Python standard library's docstrings.

    Nothing is downloaded: the module, class and function docstrings of a fixed,
    sorted list of stdlib modules (``BUILTIN_TEXT_MODULES``) are parsed with ``ast``,
    cleaned with ``inspect.cleandoc`` and joined with blank lines. The result is
    deterministic for a given Python version and ``seed``.

    Args:
        max_chars: upper bound on the length of the returned text. Whole docstrings
            are added until the next one would not fit (a single docstring longer
            than the bound is cut). ``None`` returns everything (~700k characters).
        seed: docstrings are shuffled with this seed before the text is cut, so
            a short corpus still mixes many modules. ``None`` keeps source order.

    Returns:
        The corpus as one ``str``.

    Raises:
        RuntimeError: if no stdlib sources are found (e.g. a zipped stdlib).
        ValueError: if ``max_chars`` is not positive.
    """
    if max_chars is not None and max_chars <= 0:
        raise ValueError(f"max_chars must be a positive integer or None, got {max_chars!r}")
    docs = list(stdlib_docstrings(BUILTIN_TEXT_MODULES))
    if not docs:
        raise RuntimeError(
            f"no standard-library docstrings found under {stdlib_dir()}: "
            "builtin_text() needs the stdlib .py sources; use load_text(path) instead"
        )
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(docs))
        docs = [docs[i] for i in order]
    separator = "\n\n"
    if max_chars is None:
        return separator.join(docs)
    pieces: list[str] = []
    total = 0
    for doc in docs:
        extra = len(doc) + (len(separator) if pieces else 0)
        if total + extra > max_chars:
            if not pieces:
                pieces.append(doc[:max_chars])
            break
        pieces.append(doc)
        total += extra
    return separator.join(pieces)


def _read_utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not valid UTF-8 text ({error})") from None


def load_text(path: str | os.PathLike) -> str:
    """Load a UTF-8 text corpus from a file or a folder.

    Args:
        path: a text file, or a folder: all ``*.txt``, ``*.md`` and ``*.py`` files
            below it (recursively, sorted by relative path) are read and joined
            with blank lines. Empty files inside a folder are skipped.

    Returns:
        The text as one ``str``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file (or every file of the folder) is empty, the folder
            has no text files, or a file is not valid UTF-8.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: expected a text file or a folder")
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        texts = [text for text in (_read_utf8(p) for p in files) if text.strip()]
        if not texts:
            raise ValueError(
                f"{path} is empty: expected UTF-8 text "
                f"(no non-empty {', '.join(_TEXT_SUFFIXES)} files found in the folder)"
            )
        return "\n\n".join(texts)
    text = _read_utf8(path)
    if not text.strip():
        raise ValueError(f"{path} is empty: expected UTF-8 text")
    return text


def make_lm_windows(
    ids: Sequence[int] | np.ndarray, seq_len: int, stride: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a token stream into next-token-prediction windows.

    Window ``i`` starts at token ``i * stride``; ``y`` is ``x`` shifted left by one,
    so ``y[i, t] == x[i, t + 1]`` and ``y[i, -1]`` is the token after the window.

    Args:
        ids: 1-D sequence of token ids, shape ``(T,)``.
        seq_len: window length.
        stride: step between window starts; defaults to ``seq_len``
            (non-overlapping windows). Smaller values give overlapping windows.

    Returns:
        ``(x, y)``: two int32 arrays of shape ``(N, seq_len)`` with
        ``N = (T - 1 - seq_len) // stride + 1``.

    Raises:
        ValueError: if ``seq_len``/``stride`` are not positive, ``ids`` is not 1-D,
            or the stream is shorter than ``seq_len + 1`` tokens.
    """
    if int(seq_len) != seq_len or seq_len < 1:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    seq_len = int(seq_len)
    if stride is None:
        stride = seq_len
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    stride = int(stride)
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D token ids, got shape {ids.shape}")
    if ids.size < seq_len + 1:
        raise ValueError(
            f"text too short for seq_len={seq_len}: got {ids.size} tokens, need at least "
            f"seq_len + 1 = {seq_len + 1}; use a smaller seq_len or more text"
        )
    ids = ids.astype(np.int32, copy=False)
    num_windows = (ids.size - 1 - seq_len) // stride + 1
    starts = np.arange(num_windows, dtype=np.int64)[:, None] * stride  # (N, 1)
    offsets = np.arange(seq_len, dtype=np.int64)[None, :]  # (1, seq_len)
    x = ids[starts + offsets]  # (N, seq_len)
    y = ids[starts + offsets + 1]  # (N, seq_len)
    return x, y


def _num_items(data: Any) -> int:
    if isinstance(data, dict):
        sizes = {_num_items(v) for v in data.values()}
    elif isinstance(data, tuple):
        sizes = {_num_items(v) for v in data}
    else:
        return len(data)
    if len(sizes) != 1:
        raise ValueError(f"all arrays must have the same first dimension, got sizes {sizes}")
    return sizes.pop()


def _take(data: Any, index: np.ndarray) -> Any:
    if isinstance(data, dict):
        return {key: _take(value, index) for key, value in data.items()}
    if isinstance(data, tuple):
        return tuple(_take(value, index) for value in data)
    return np.asarray(data)[index]


def train_val_split(
    x: Any, y: Any, val_fraction: float = 0.1, seed: int | None = None
) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """Split examples into training and validation sets, deterministically.

    Args:
        x: inputs: an array-like with examples on axis 0, or a tuple / dict of
            such arrays (e.g. ``(encoder_ids, decoder_input_ids)``).
        y: targets, same convention as ``x``.
        val_fraction: fraction of examples for validation, in ``[0, 1)``; at least
            one example goes to validation when it is positive.
        seed: ``None`` (default) keeps the order and takes the *last* examples as
            validation (right for LM windows cut from one text). An integer shuffles
            with that seed first (right for examples stored grouped by class).

    Returns:
        ``((x_train, y_train), (x_val, y_val))`` with the same structure as the
        inputs; array-likes come back as numpy arrays.

    Raises:
        ValueError: for a bad ``val_fraction``, mismatched lengths, or too few
            examples to keep at least one for training.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n = _num_items(x)
    n_y = _num_items(y)
    if n != n_y:
        raise ValueError(f"x and y have different numbers of examples: {n} vs {n_y}")
    num_val = int(round(n * val_fraction))
    if val_fraction > 0:
        num_val = max(num_val, 1)
    if n - num_val < 1:
        raise ValueError(
            f"cannot split {n} example(s) with val_fraction={val_fraction}: "
            "no training examples would be left"
        )
    if seed is None:
        order = np.arange(n)
    else:
        order = np.random.default_rng(seed).permutation(n)
    train_idx, val_idx = order[: n - num_val], order[n - num_val :]
    return (_take(x, train_idx), _take(y, train_idx)), (_take(x, val_idx), _take(y, val_idx))


def _list_files(path: Path, suffixes: Iterable[str]) -> list[Path]:
    """Return the regular, non-hidden files directly in ``path`` with one of ``suffixes``."""
    wanted = {s.lower() for s in suffixes}
    return sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in wanted
    )
