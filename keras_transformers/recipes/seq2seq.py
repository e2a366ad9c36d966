"""The sequence-to-sequence recipe's data and report: pairs or a generated task, greedy decoding.

Used by ``examples/train_seq2seq.py`` around its own ``build_seq2seq -> compile -> fit``.
"""

import os

import numpy as np

from keras_transformers import data
from keras_transformers.data import BOS_ID, EOS_ID, NUM_SPECIAL_TOKENS, PAD_ID


def _pairs_or_task(args):
    """Return ``(src, tgt_in, tgt_out, tokenizer or None, description)``."""
    if args.data:
        sources, targets = data.load_tsv_pairs(args.data)
        if len(sources) < 2:
            raise ValueError(
                f"{args.data} holds {len(sources)} pair; training needs at least 2 "
                "'source<TAB>target' lines (one for training, one for validation)"
            )
        if args.tokenizer == "char":
            tokenizer = data.CharTokenizer.fit("".join(sources) + "".join(targets))
        else:
            tokenizer = data.ByteTokenizer()
        src_len = min(args.seq_len, max(len(tokenizer.encode(s)) for s in sources))
        tgt_len = min(args.seq_len, max(len(tokenizer.encode(t)) for t in targets) + 1)
        src, tgt_in, tgt_out = data.encode_pairs(
            tokenizer, tokenizer, sources, targets, src_len, tgt_len
        )
        return src, tgt_in, tgt_out, tokenizer, f"{args.data}: {len(sources)} pairs"
    if args.task == "arithmetic":
        task = data.arithmetic_task(args.num_examples, max_digits=args.max_digits, seed=args.seed)
        example = f"e.g. {task.questions[0]}={task.answers[0]}"
        return (
            task.src,
            task.tgt_in,
            task.tgt_out,
            task.tokenizer,
            f"generated task 'arithmetic' ({example})",
        )
    make = {"reverse": data.reverse_task, "copy": data.copy_task, "sort": data.sort_task}
    src, tgt_in, tgt_out = make[args.task](
        args.num_examples, length=args.seq_len, vocab_size=args.task_vocab, seed=args.seed
    )
    about = f"generated task {args.task!r}: length {args.seq_len}, vocabulary {args.task_vocab}"
    return src, tgt_in, tgt_out, None, about


def load_data(args):
    """The pairs (``--data``) or the generated ``--task``, split for training.

    Returns:
        ``tokenizer or None, vocabulary size, (x_train, y_train), (x_val, y_val)`` where each
        ``x`` is ``{"encoder_token_ids": (N, Ls), "decoder_token_ids": (N, Lt)}`` and each ``y``
        is ``(targets (N, Lt), weights (N, Lt))`` with weight 0 on padding.
    """
    src, tgt_in, tgt_out, tokenizer, source = _pairs_or_task(args)
    if tokenizer is not None:
        tokenizer.save(os.path.join(args.logdir, "tokenizer.json"))
    vocab = tokenizer.vocabulary_size if tokenizer is not None else args.task_vocab
    weights = (tgt_out != 0).astype("float32")  # (N, Lt): padding does not count
    (x_train, y_train), (x_val, y_val) = data.train_val_split(
        (src, tgt_in), (tgt_out, weights), val_fraction=args.val_fraction, seed=args.seed
    )
    print(f"data: {source}; source length {src.shape[1]}, target length {tgt_out.shape[1]}")

    def as_inputs(pair):
        return {"encoder_token_ids": pair[0], "decoder_token_ids": pair[1]}

    return tokenizer, vocab, (as_inputs(x_train), y_train), (as_inputs(x_val), y_val)


def greedy_decode(model, src, tgt_len):
    """Greedy decoding: ``src (N, Ls) -> ids (N, tgt_len)``.

    The decoder input starts as ``<bos>``; step ``t`` fills position ``t + 1`` with the argmax at
    position ``t`` (reserved ids other than ``<eos>`` excluded). A model with ``generate`` (a
    :class:`~keras_transformers.models.Seq2Seq`) decodes the first ``tgt_len - 1`` tokens with
    its self- and cross-attention caches and the last one with a full pass; any other model is
    recomputed in full for every token.
    """
    n = src.shape[0]
    banned = [i for i in range(NUM_SPECIAL_TOKENS) if i != EOS_ID]
    if hasattr(model, "generate") and tgt_len > 1:
        dec = model.generate(src, tgt_len, start_token_id=BOS_ID, suppress_token_ids=banned)
        logits = np.asarray(
            model.predict_on_batch({"encoder_token_ids": src, "decoder_token_ids": dec})
        )[:, -1]  # (N, V): the last target position
        logits[:, banned] = -np.inf
        return np.concatenate([dec[:, 1:], np.argmax(logits, axis=-1)[:, None]], axis=1)
    dec = np.zeros((n, tgt_len), dtype="int32")  # (N, Lt)
    dec[:, 0] = BOS_ID
    out = np.zeros((n, tgt_len), dtype="int32")  # (N, Lt)
    for t in range(tgt_len):
        logits = np.asarray(
            model.predict_on_batch({"encoder_token_ids": src, "decoder_token_ids": dec})
        )[:, t]  # (N, V)
        logits[:, banned] = -np.inf
        out[:, t] = np.argmax(logits, axis=-1)
        if t + 1 < tgt_len:
            dec[:, t + 1] = out[:, t]
    return out.astype("int32")


def strip(ids):
    """Token ids up to the first ``<eos>``/``<pad>``."""
    result = []
    for i in ids:
        if int(i) in (EOS_ID, PAD_ID):
            break
        result.append(int(i))
    return result


def print_exact_match(model, args, x_val, targets, tokenizer):
    """Decode ``--eval-examples`` validation sources greedily; print three and the exact match."""
    n = min(args.eval_examples, len(targets))
    sources = x_val["encoder_token_ids"][:n]
    predicted = greedy_decode(model, sources, targets.shape[1])
    hits = [strip(p) == strip(t) for p, t in zip(predicted, targets[:n])]
    exact = float(np.mean(hits))

    def show(ids):
        ids = strip(ids)
        if tokenizer is None:
            return " ".join(str(i) for i in ids)
        return tokenizer.decode(np.asarray(ids, dtype="int32"))

    print("Greedy decoding of validation examples (source -> predicted | target):")
    for i in range(min(3, n)):
        mark = "ok" if hits[i] else "--"
        print(f"  [{mark}] {show(sources[i])} -> {show(predicted[i])} | {show(targets[i])}")
    print(f"Exact-match accuracy of greedy decoding: {exact:.3f} ({n} validation examples)")
    return exact
