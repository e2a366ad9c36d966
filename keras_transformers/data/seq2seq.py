"""Sequence-to-sequence data: tab-separated pairs and teacher-forcing arrays."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .tokenizers import PAD_ID, Tokenizer


def load_tsv_pairs(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Load ``source<TAB>target`` pairs, one per line (no header).

    Blank lines are skipped. Columns after the second are ignored (so Anki /
    Tatoeba-style files with an attribution column load as-is).

    Args:
        path: a UTF-8 text file.

    Returns:
        ``(sources, targets)``: two ``list[str]`` of the same length.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is empty, or a line has no tab or an empty
            source/target (the message names the line number).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: expected a tab-separated text file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not valid UTF-8 text ({error})") from None
    if not text.strip():
        raise ValueError(f"{path} is empty: expected lines of 'source<TAB>target'")
    sources: list[str] = []
    targets: list[str] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) < 2:
            raise ValueError(
                f"{path}, line {line_number}: expected 'source<TAB>target', "
                f"found no tab in {line[:60]!r}"
            )
        source, target = columns[0].strip(), columns[1].strip()
        if not source or not target:
            side = "source" if not source else "target"
            raise ValueError(f"{path}, line {line_number}: empty {side}")
        sources.append(source)
        targets.append(target)
    return sources, targets


def _pad(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    out = np.full((len(rows), length), PAD_ID, dtype=np.int32)  # (N, length)
    for i, row in enumerate(rows):
        row = row[:length]
        out[i, : len(row)] = row
    return out


def encode_pairs(
    src_tokenizer: Tokenizer,
    tgt_tokenizer: Tokenizer,
    sources: Sequence[str],
    targets: Sequence[str],
    src_length: int,
    tgt_length: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode text pairs for teacher-forced encoder-decoder training.

    With target ids ``t``: the decoder input is ``<bos> t`` and the decoder target
    is ``t <eos>`` (one step ahead), both cut to ``tgt_length`` and padded with 0.
    Sources are encoded without bos/eos and cut to ``src_length``.

    Args:
        src_tokenizer: tokenizer for the sources.
        tgt_tokenizer: tokenizer for the targets (may be the same object).
        sources: source texts, length N.
        targets: target texts, length N.
        src_length: encoder sequence length.
        tgt_length: decoder sequence length.

    Returns:
        ``(encoder_ids, decoder_input_ids, decoder_target_ids)``: int32 arrays of
        shapes ``(N, src_length)``, ``(N, tgt_length)``, ``(N, tgt_length)``.
        Use ``x=(encoder_ids, decoder_input_ids), y=decoder_target_ids``.
    """
    if isinstance(sources, str) or isinstance(targets, str):
        raise TypeError("encode_pairs expects lists of strings, got a single str")
    if len(sources) != len(targets):
        raise ValueError(
            f"sources and targets have different lengths: {len(sources)} vs {len(targets)}"
        )
    for name, value in (("src_length", src_length), ("tgt_length", tgt_length)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    encoder_rows = [np.asarray(src_tokenizer.encode(s), dtype=np.int32) for s in sources]
    decoder_rows = [
        np.asarray(tgt_tokenizer.encode(t, add_bos=True, add_eos=True), dtype=np.int32)
        for t in targets
    ]  # each (T + 2,) = <bos> t <eos>
    encoder_ids = _pad(encoder_rows, src_length)  # (N, src_length)
    decoder_input_ids = _pad([row[:-1] for row in decoder_rows], tgt_length)  # (N, tgt_length)
    decoder_target_ids = _pad([row[1:] for row in decoder_rows], tgt_length)  # (N, tgt_length)
    return encoder_ids, decoder_input_ids, decoder_target_ids
