"""Generated (synthetic) tasks for quick, deterministic experiments.

Token ids 0-3 are reserved exactly like the tokenizers (``0=<pad> 1=<bos>
2=<eos> 3=<unk>``), so generated tokens are drawn from ``[4, vocab_size)`` and
``vocab_size`` is the full embedding size a model needs.

The seq2seq tasks return ``(src, tgt_in, tgt_out)`` int32 arrays of shape
``(N, length)``: ``tgt_out`` is the target sequence and ``tgt_in`` is ``<bos>``
followed by ``tgt_out[:, :-1]`` (teacher forcing). Train with
``model.fit((src, tgt_in), tgt_out)``; generate by starting from ``<bos>``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .seq2seq import encode_pairs
from .tokenizers import BOS_ID, NUM_SPECIAL_TOKENS, CharTokenizer

ARITHMETIC_CHARS = "0123456789+-="


def _check_common(num_examples: int, length: int, vocab_size: int, min_vocab: int) -> None:
    if num_examples < 1:
        raise ValueError(f"num_examples must be a positive integer, got {num_examples!r}")
    if length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    if vocab_size < min_vocab:
        raise ValueError(
            f"vocab_size must be at least {min_vocab} (ids 0-{NUM_SPECIAL_TOKENS - 1} are "
            f"reserved), got {vocab_size!r}"
        )


def _random_tokens(num_examples: int, length: int, vocab_size: int, seed: int) -> np.ndarray:
    _check_common(num_examples, length, vocab_size, NUM_SPECIAL_TOKENS + 1)
    rng = np.random.default_rng(seed)
    return rng.integers(NUM_SPECIAL_TOKENS, vocab_size, size=(num_examples, length)).astype(
        np.int32
    )  # (N, length)


def _teacher_forcing(src: np.ndarray, tgt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bos = np.full((tgt.shape[0], 1), BOS_ID, dtype=np.int32)  # (N, 1)
    tgt_in = np.concatenate([bos, tgt[:, :-1]], axis=1).astype(np.int32)  # (N, length)
    return src, tgt_in, tgt.astype(np.int32)


def copy_task(
    num_examples: int = 1000, length: int = 10, vocab_size: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copy task: the target equals the source.

    Args:
        num_examples: number of examples N.
        length: sequence length.
        vocab_size: total vocabulary size, reserved ids included (>= 5); tokens are
            uniform in ``[4, vocab_size)``.
        seed: random seed.

    Returns:
        ``(src, tgt_in, tgt_out)``, int32, each of shape ``(N, length)``, with
        ``tgt_out == src`` and ``tgt_in = [1] + tgt_out[:, :-1]``.
    """
    src = _random_tokens(num_examples, length, vocab_size, seed)
    return _teacher_forcing(src, src.copy())


def reverse_task(
    num_examples: int = 1000, length: int = 10, vocab_size: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reverse task: the target is the source backwards.

    Arguments as in ``copy_task``.

    Returns:
        ``(src, tgt_in, tgt_out)``, int32, each of shape ``(N, length)``, with
        ``tgt_out == src[:, ::-1]`` and ``tgt_in = [1] + tgt_out[:, :-1]``.
    """
    src = _random_tokens(num_examples, length, vocab_size, seed)
    return _teacher_forcing(src, np.ascontiguousarray(src[:, ::-1]))


def sort_task(
    num_examples: int = 1000, length: int = 10, vocab_size: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort task: the target is the source sorted in ascending order.

    Arguments as in ``copy_task``.

    Returns:
        ``(src, tgt_in, tgt_out)``, int32, each of shape ``(N, length)``, with
        ``tgt_out == np.sort(src, axis=1)`` and ``tgt_in = [1] + tgt_out[:, :-1]``.
    """
    src = _random_tokens(num_examples, length, vocab_size, seed)
    return _teacher_forcing(src, np.sort(src, axis=1))


@dataclasses.dataclass(frozen=True)
class ArithmeticTask:
    """Result of ``arithmetic_task``.

    Attributes:
        questions: ``list[str]`` of length N, e.g. ``"123+45"``.
        answers: ``list[str]`` of length N, e.g. ``"168"`` (may start with ``-``).
        texts: ``list[str]``, ``question + "=" + answer`` for decoder-only models,
            e.g. ``"123+45=168"``.
        tokenizer: ``CharTokenizer`` over ``"0123456789+-="`` (vocabulary_size 17).
        src: int32 ``(N, 2 * max_digits + 1)``, question ids padded with 0.
        tgt_in: int32 ``(N, max_digits + 2)``, ``<bos> answer`` padded with 0.
        tgt_out: int32 ``(N, max_digits + 2)``, ``answer <eos>`` padded with 0.
    """

    questions: list[str]
    answers: list[str]
    texts: list[str]
    tokenizer: CharTokenizer
    src: np.ndarray
    tgt_in: np.ndarray
    tgt_out: np.ndarray


def _random_operands(rng: np.random.Generator, num: int, max_digits: int) -> np.ndarray:
    """Numbers whose digit count is uniform in ``[1, max_digits]``, then uniform value."""
    digits = rng.integers(1, max_digits + 1, size=num)  # (num,)
    low = np.where(digits == 1, 0, 10 ** (digits - 1))
    high = 10**digits  # exclusive
    return (low + np.floor(rng.random(num) * (high - low))).astype(np.int64)  # (num,)


def arithmetic_task(
    num_examples: int = 1000, max_digits: int = 3, seed: int = 0, operators: str = "+"
) -> ArithmeticTask:
    """Integer arithmetic as text: ``"123+45"`` -> ``"168"``.

    Operand digit counts are uniform in ``[1, max_digits]``. With ``"-"`` in
    ``operators`` answers can be negative (``"12-45"`` -> ``"-33"``).

    Args:
        num_examples: number of examples N.
        max_digits: maximum digits per operand (1-9).
        seed: random seed.
        operators: operators to draw from, a non-empty subset of ``"+-"``.

    Returns:
        An ``ArithmeticTask`` (see its docstring) holding the strings, the
        ``CharTokenizer`` and the encoded seq2seq arrays; train with
        ``model.fit((task.src, task.tgt_in), task.tgt_out)``.
    """
    if num_examples < 1:
        raise ValueError(f"num_examples must be a positive integer, got {num_examples!r}")
    if not 1 <= max_digits <= 9:
        raise ValueError(f"max_digits must be between 1 and 9, got {max_digits!r}")
    if not operators or set(operators) - set("+-"):
        raise ValueError(f"operators must be a non-empty subset of '+-', got {operators!r}")
    rng = np.random.default_rng(seed)
    left = _random_operands(rng, num_examples, max_digits)
    right = _random_operands(rng, num_examples, max_digits)
    ops = np.asarray(sorted(set(operators)))[rng.integers(0, len(set(operators)), num_examples)]
    questions, answers = [], []
    for a, op, b in zip(left.tolist(), ops.tolist(), right.tolist()):
        questions.append(f"{a}{op}{b}")
        answers.append(str(a + b if op == "+" else a - b))
    tokenizer = CharTokenizer(ARITHMETIC_CHARS)
    src, tgt_in, tgt_out = encode_pairs(
        tokenizer, tokenizer, questions, answers, 2 * max_digits + 1, max_digits + 2
    )
    texts = [f"{q}={a}" for q, a in zip(questions, answers)]
    return ArithmeticTask(questions, answers, texts, tokenizer, src, tgt_in, tgt_out)


def contains_both_task(
    num_examples: int = 1000,
    length: int = 16,
    vocab_size: int = 16,
    a: int = 4,
    b: int = 5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Binary classification: does the sequence contain both token ``a`` and token ``b``?

    Half the examples are positives; negatives are split evenly between "only
    ``a``", "only ``b``" and "neither", so neither token alone decides the label.
    Each present token appears 1-3 times at random positions.

    Args:
        num_examples: number of examples N.
        length: sequence length (>= 2).
        vocab_size: total vocabulary size, reserved ids included; must leave at
            least one filler token besides ``a`` and ``b`` (>= 7 with defaults).
        a: first marker token id, in ``[4, vocab_size)``.
        b: second marker token id, in ``[4, vocab_size)``, different from ``a``.
        seed: random seed.

    Returns:
        ``(x, y)``: int32 ``(N, length)`` token ids and int32 ``(N,)`` labels in {0, 1}.
    """
    _check_common(num_examples, length, vocab_size, NUM_SPECIAL_TOKENS + 3)
    if length < 2:
        raise ValueError(f"length must be at least 2 to hold both tokens, got {length!r}")
    for name, token in (("a", a), ("b", b)):
        if not NUM_SPECIAL_TOKENS <= token < vocab_size:
            raise ValueError(
                f"{name}={token!r} must be in [{NUM_SPECIAL_TOKENS}, vocab_size={vocab_size})"
            )
    if a == b:
        raise ValueError(f"a and b must differ, got a=b={a}")
    rng = np.random.default_rng(seed)
    fillers = np.asarray(
        [t for t in range(NUM_SPECIAL_TOKENS, vocab_size) if t not in (a, b)], dtype=np.int32
    )
    x = fillers[rng.integers(0, len(fillers), size=(num_examples, length))]  # (N, length)
    # Category 0: both, 1: only a, 2: only b, 3: neither; P = 1/2, 1/6, 1/6, 1/6.
    category = rng.choice(4, size=num_examples, p=[0.5, 1 / 6, 1 / 6, 1 / 6])
    max_copies = max(1, min(3, length // 2))
    for i in range(num_examples):
        markers = {0: [a, b], 1: [a], 2: [b], 3: []}[int(category[i])]
        counts = rng.integers(1, max_copies + 1, size=len(markers))
        tokens = np.repeat(np.asarray(markers, dtype=np.int32), counts)
        positions = rng.choice(length, size=len(tokens), replace=False)
        x[i, positions] = tokens
    y = ((x == a).any(axis=1) & (x == b).any(axis=1)).astype(np.int32)  # (N,)
    return x.astype(np.int32), y
