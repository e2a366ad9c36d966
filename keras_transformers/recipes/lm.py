"""The language-model recipe's data and report: token windows, TensorBoard loggers, a sample.

Used by ``examples/train_lm.py`` around its own ``build_decoder_lm -> compile -> fit``.
"""

import os

import numpy as np

from keras_transformers import callbacks, data
from keras_transformers.data import BOS_ID, NUM_SPECIAL_TOKENS
from keras_transformers.recipes.run import attention_logger


def load_data(args):
    """Read the text, fit and save the tokenizer, cut next-token windows.

    Returns:
        ``tokenizer, (x_train, y_train), (x_val, y_val)``, each array ``(N, L)`` int32. The
        token stream (not the windows) is split, so no validation text is seen in training.
    """
    if args.data:
        text = data.load_text(args.data)
        source = args.data
    else:
        text = data.builtin_text(max_chars=args.max_chars, seed=args.seed)
        source = "built-in text (standard-library docstrings)"
    tokenizer = data.train_tokenizer(
        args.tokenizer, text.split("\n"), vocabulary_size=args.vocab_size
    )
    tokenizer.save(os.path.join(args.logdir, "tokenizer.json"))
    ids = tokenizer.encode(text)  # (T,)
    print(
        f"data: {source}: {len(text):,} characters -> {ids.size:,} tokens "
        f"({type(tokenizer).__name__}, vocabulary {tokenizer.vocabulary_size})"
    )
    num_val = max(int(round(ids.size * args.val_fraction)), args.seq_len + 1)
    train_ids, val_ids = ids[: ids.size - num_val], ids[ids.size - num_val :]
    train = data.make_lm_windows(train_ids, args.seq_len, stride=args.stride)  # (N, L) each
    validation = data.make_lm_windows(val_ids, args.seq_len)
    return tokenizer, train, validation


def loggers(args, tokenizer, x_val):
    """Attention maps and a greedy text sample each epoch (TensorBoard Images and Text)."""
    result = [attention_logger(args, tokenizer, x_val)]
    if args.sample_length > 0:
        result.append(
            callbacks.TextSampleLogger(
                [args.prompt],
                tokenizer.encode,
                tokenizer.decode,
                args.logdir,
                num_tokens=min(args.sample_length, 64),
            )
        )
    return result


def greedy_sample(model, tokenizer, prompt, num_tokens, seq_len):
    """Greedy continuation of ``prompt`` by full recomputation (no KV cache).

    The running text is right-padded to the model's fixed length ``seq_len`` (causal attention
    keeps the padding invisible); past ``seq_len`` tokens the window slides. Reserved ids are
    never chosen.

    Returns:
        The prompt followed by ``num_tokens`` generated tokens, decoded.
    """
    ids = [int(i) for i in tokenizer.encode(prompt)] or [BOS_ID]
    window = np.zeros((1, seq_len), dtype="int32")  # (1, L)
    for _ in range(num_tokens):
        context = ids[-seq_len:]
        window[:] = 0
        window[0, : len(context)] = context
        logits = np.asarray(model.predict_on_batch(window))[0, len(context) - 1]  # (V,)
        logits[:NUM_SPECIAL_TOKENS] = -np.inf
        ids.append(int(np.argmax(logits)))
    return tokenizer.decode(np.asarray(ids, dtype="int32"))


def print_sample(model, tokenizer, args):
    """Print (and return) ``--sample-length`` greedy tokens after ``--prompt``; None for 0."""
    if args.sample_length <= 0:
        return None
    sample = greedy_sample(model, tokenizer, args.prompt, args.sample_length, args.seq_len)
    print(f"Greedy sample ({args.sample_length} tokens after {args.prompt!r}):")
    print("-" * 72)
    print(sample)
    print("-" * 72)
    return sample
