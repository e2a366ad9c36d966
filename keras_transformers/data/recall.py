"""Key-value recall across segments: a task only a memory of the previous segment can solve.

Each document is two segments of ``L = 2·P`` tokens. The *store* segment lists ``P`` pairs
``k_1 v_1 k_2 v_2 ... k_P v_P`` (distinct keys, random values, drawn afresh per document); the
*query* segment lists ``P`` pairs again, with keys drawn at random (with replacement) among the
document's keys, each followed by its value. The targets are the next tokens.

Two 0/1 masks score the positions whose next token is a queried value (position of a key in the
query segment): ``first`` marks a key's first occurrence in the query segment, whose value appears
*only in the previous segment* — a model that sees one segment at a time is at chance
(``1/num_values``) there, a model with a memory of the previous segment (a Memorizing Transformer
with ``memory_size = L``) can reach 100%; ``repeat`` marks a key already queried earlier in the
same segment, which local attention can answer. Training on both (``sample_weight = first +
repeat``) teaches the same query/key/value projections the look-up inside the segment (an
induction head) that the kNN memory then applies across segments, since the memory has no
gradient of its own.

Layout: ``batch_size`` parallel streams of consecutive documents, batch ``n`` holding segment
``n`` of every stream (as :func:`keras_transformers.models.memorizing.segment_batches`), so feed
with ``fit(x, y, sample_weight=w, batch_size=batch_size, shuffle=False)``; store and query
segments alternate in every row.

Token ids: ``0..3`` reserved (pad, bos, eos, unk), keys ``4 .. 4+K-1``, values
``4+K .. 4+K+V-1``; ``vocabulary_size = 4 + K + V``.

Example:
    >>> from keras_transformers.data.recall import make_recall_streams
    >>> x, y, first, repeat = make_recall_streams(num_documents=4, num_pairs=3, batch_size=2,
    ...                                           seed=0)
    >>> x.shape, int(first.sum() + repeat.sum())
    ((8, 6), 12)
"""

import numpy as np

FIRST_ID = 4


def recall_vocabulary_size(num_keys=16, num_values=16):
    """``4 + num_keys + num_values``: the vocabulary of :func:`make_recall_streams`."""
    return FIRST_ID + int(num_keys) + int(num_values)


def _check(name, value, minimum=1):
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}.")
    return int(value)


def make_recall_streams(
    num_documents, num_pairs=8, num_keys=16, num_values=16, batch_size=8, seed=None
):
    """Generate the cross-segment key-value recall task.

    Args:
        num_documents: documents in all (a multiple of ``batch_size``); each is two segments.
        num_pairs: ``P`` pairs per document; segment length ``L = 2·P``.
        num_keys: ``K`` distinct key tokens (``>= P``: keys of a document are distinct).
        num_values: ``V`` value tokens (chance accuracy ``1/V``).
        batch_size: ``B`` parallel streams.
        seed: numpy seed.

    Returns:
        ``(x, y, first, repeat)``: ``(2·num_documents, L)`` int32 inputs and next-token targets,
        and float32 masks of the query positions whose key is queried for the first time in the
        segment (answer only in the previous segment) and again (answer also in the segment).
    """
    num_documents = _check("num_documents", num_documents)
    num_pairs = _check("num_pairs", num_pairs)
    num_keys = _check("num_keys", num_keys, num_pairs)
    num_values = _check("num_values", num_values, 2)
    batch_size = _check("batch_size", batch_size)
    if num_documents % batch_size:
        raise ValueError(
            f"num_documents={num_documents}: must be a multiple of batch_size={batch_size}."
        )
    rng = np.random.default_rng(seed)
    n, p = num_documents, num_pairs
    keys = np.argsort(rng.random((n, num_keys)), axis=1)[:, :p] + FIRST_ID  # (n, P) distinct
    values = rng.integers(0, num_values, size=(n, p)) + FIRST_ID + num_keys  # (n, P)
    order = rng.integers(0, p, size=(n, p))  # queried pair of each query, with replacement
    q_keys = np.take_along_axis(keys, order, axis=1)
    q_values = np.take_along_axis(values, order, axis=1)
    store = np.stack([keys, values], axis=-1).reshape(n, 2 * p)  # k1 v1 k2 v2 ...
    query = np.stack([q_keys, q_values], axis=-1).reshape(n, 2 * p)
    docs = np.concatenate([store, query], axis=1)  # (n, 4P): the token stream of a document
    # next tokens within a document; the last target of the query segment is padding (weight 0)
    targets = np.concatenate([docs[:, 1:], np.zeros((n, 1), docs.dtype)], axis=1)
    seen = np.zeros((n, p), bool)  # pair already queried in this segment
    is_first = np.zeros((n, p), bool)
    for j in range(p):
        is_first[:, j] = ~seen[np.arange(n), order[:, j]]
        seen[np.arange(n), order[:, j]] = True
    first = np.zeros((n, 4 * p), "float32")
    repeat = np.zeros((n, 4 * p), "float32")
    first[:, 2 * p :: 2] = is_first  # at a key of the query segment the target is its value
    repeat[:, 2 * p :: 2] = ~is_first
    per_stream = n // batch_size

    def to_batches(a):  # (n, 4P) -> (2n, L), batch t = segment t of every stream
        a = a.reshape(batch_size, per_stream * 2, 2 * p)  # stream b holds docs b·per_stream...
        return a.transpose(1, 0, 2).reshape(-1, 2 * p)

    return (
        to_batches(docs).astype("int32"),
        to_batches(targets).astype("int32"),
        to_batches(first),
        to_batches(repeat),
    )
