"""The BERT recipe: flags, the masked-LM and classification data, the phase record.

Used by ``examples/pretrain_bert.py`` around its own pre-train -> fine-tune -> from-scratch
phases. The module imports no Keras at load time, so ``--help`` answers at once.
"""

import argparse
import json
import os
import types

import numpy as np

from keras_transformers.recipes.argtypes import (
    DefaultsHelpFormatter,
    add_run_arguments,
    layer_spec_or_none,
    number,
    positive_int,
)

DESCRIPTION = (
    "Pre-train a small BERT-style encoder with masked language modelling, then fine-tune it. "
    "Phase 1 pre-trains an encoder on the built-in text (standard-library docstrings, nothing "
    "is downloaded) with BERT's masked-LM objective (30% of the tokens selected by default: 80%"
    " [MASK], 10% random, 10% kept; the loss is the mean over the selected tokens) and saves "
    "the checkpoint. Phase 2 builds an encoder classifier for the built-in 4-class task (which "
    "package family a docstring sentence comes from), loads the pre-trained encoder weights "
    "into it and fine-tunes on a few labelled examples (``--num-labelled``, 200 by default: "
    "where pre-training is expected to matter most); phase 3 trains the same classifier from "
    "scratch on the same examples with the same settings. It prints the masked-token accuracy "
    "and both validation accuracies. Docstrings that contain a validation sentence of the "
    "classification task are left out of the pre-training text."
)


def build_parser(prog=None):
    p = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        formatter_class=DefaultsHelpFormatter,
    )
    model = p.add_argument_group("model (shared by pre-training and fine-tuning)")
    model.add_argument(
        "--attention", type=layer_spec_or_none, default="full", help="attention core"
    )
    model.add_argument(
        "--position",
        type=layer_spec_or_none,
        default="learned",
        help="positional encoding or 'none'",
    )
    model.add_argument("--d-model", type=positive_int, default=64, help="model width d")
    model.add_argument("--heads", type=positive_int, default=4, help="attention heads")
    model.add_argument("--layers", type=positive_int, default=2, help="encoder blocks")
    model.add_argument("--ff-dim", type=positive_int, default=None, help="FFN width (4·d)")
    model.add_argument("--dropout", type=number(0.0, 1.0), default=0.1, help="dropout rate")
    model.add_argument(
        "--tokenizer",
        choices=("word", "byte"),
        default="word",
        help="word (vocabulary fitted on the pre-training text) or byte (260 ids)",
    )
    model.add_argument(
        "--seq-len",
        type=positive_int,
        default=None,
        help="tokens per sequence (default: 48 for word, 128 for byte tokens)",
    )
    model.add_argument(
        "--vocab-size",
        type=positive_int,
        default=3000,
        help="word vocabulary fitted on the pre-training text (reserved ids included; "
        "[MASK] is one more id); ignored for byte tokens",
    )
    pre = p.add_argument_group("pre-training (masked LM)")
    pre.add_argument(
        "--max-chars",
        type=positive_int,
        default=1_000_000,
        help="characters of built-in text to pre-train on (all of it is about 700,000)",
    )
    pre.add_argument("--pretrain-epochs", type=positive_int, default=6, help="epochs")
    pre.add_argument("--pretrain-lr", type=number(0.0), default=2e-3, help="peak learning rate")
    pre.add_argument(
        "--mask-copies",
        type=positive_int,
        default=2,
        help="copies of each sequence, each masked differently (BERT's dupe factor)",
    )
    pre.add_argument(
        "--mask-rate",
        type=number(0.0, 1.0, open_low=True),
        default=0.3,
        help="share of the tokens selected for prediction (BERT: 0.15; a higher rate gives a "
        "small model more training signal per step)",
    )
    ft = p.add_argument_group("fine-tuning (classification)")
    ft.add_argument(
        "--num-examples",
        type=positive_int,
        default=1200,
        help="examples of the built-in 4-class task (at most about 2,650)",
    )
    ft.add_argument(
        "--num-labelled",
        type=positive_int,
        default=200,
        help="labelled training examples used by fine-tuning and by the from-scratch baseline "
        "(the first N of the training split; pre-training is expected to matter most when labels "
        "are few)",
    )
    ft.add_argument("--finetune-epochs", type=positive_int, default=20, help="epochs")
    ft.add_argument("--finetune-lr", type=number(0.0), default=2e-3, help="peak learning rate")
    ft.add_argument(
        "--freeze-embedding",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep the pre-trained token embedding fixed while fine-tuning (the from-scratch "
        "baseline always trains its own)",
    )
    ft.add_argument(
        "--val-fraction",
        type=number(0.0, 1.0, open_low=True),
        default=0.2,
        help="held-out share of the classification examples (and 5%% of the pre-training "
        "sequences)",
    )
    train = p.add_argument_group("training")
    add_run_arguments(train, "pretrain_bert")
    train.add_argument("--batch-size", type=positive_int, default=32, help="batch size")
    train.add_argument("--weight-decay", type=number(0.0), default=0.01, help="AdamW decay")
    return p


def parse_args(argv=None, prog=None):
    """Parse ``argv`` (default ``sys.argv[1:]``) and check that --heads divides --d-model."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.d_model % args.heads:
        parser.error(f"--d-model={args.d_model} must be divisible by --heads={args.heads}")
    args.example = "pretrain_bert"
    return args


def load_results(logdir):
    """The finished phases' results of an earlier start (``<logdir>/results.json``), or {}."""
    path = os.path.join(logdir, "results.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        results = json.load(handle)
    print(f"resuming: finished phases {sorted(results)}")
    return results


def save_results(logdir, results):
    with open(os.path.join(logdir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)


def load_data(args):
    """The classification task and the masked-LM sequences of the built-in text.

    Docstrings that contain a validation sentence of the classification task are left out of
    the pre-training text. ``--seq-len`` defaults here (48 words or 128 bytes).

    Returns:
        a namespace with ``tokenizer``, ``vocab_size`` (+ [MASK]), ``class_names``,
        ``classify_train`` / ``classify_val`` (``(x (N, L), y (N,))``, ``--num-labelled``
        applied), ``mlm_train`` / ``mlm_val`` (``(x, mask_ids, mask_weights)``; ``x`` holds
        ``token_ids (N, L)`` and ``mask_positions (N, P)``).
    """
    from keras_transformers import data
    from keras_transformers.models.bert import mask_token_id_for, mask_tokens
    from keras_transformers.recipes.run import user_errors

    with user_errors("--num-examples"):
        texts, labels, class_names = data.builtin_classification(args.num_examples, seed=args.seed)
    (train_texts, y_train), (val_texts, y_val) = data.train_val_split(
        np.asarray(texts, dtype=object), labels, val_fraction=args.val_fraction, seed=args.seed
    )
    docs = data.builtin_text(max_chars=args.max_chars, seed=args.seed).split("\n\n")
    held_out = [str(t) for t in val_texts]
    kept = [d for d in docs if not any(sentence in d for sentence in held_out)]
    if args.tokenizer == "word":
        tokenizer = data.WordTokenizer.fit(kept, max_vocab=args.vocab_size)
    else:
        tokenizer = data.ByteTokenizer()
    args.seq_len = args.seq_len or (48 if args.tokenizer == "word" else 128)
    tokenizer.save(os.path.join(args.logdir, "tokenizer.json"))
    vocab_size, mask_id = mask_token_id_for(tokenizer.vocabulary_size)
    length = args.seq_len
    chunks = []
    for doc in kept:
        ids = tokenizer.encode(doc)
        chunks.extend(ids[i : i + length] for i in range(0, len(ids), length) if len(ids[i:]) > 3)
    sequences = np.zeros((len(chunks), length), np.int32)  # (N, L), right-padded
    for row, ids in enumerate(chunks):
        sequences[row, : len(ids)] = ids
    order = np.random.default_rng(args.seed).permutation(len(sequences))
    num_val = max(1, len(sequences) // 20)
    pre_val, pre_train = sequences[order[:num_val]], sequences[order[num_val:]]
    print(
        f"pre-training text: {len(kept)} docstrings ({len(docs) - len(kept)} left out: they hold "
        f"a validation sentence) -> {len(sequences)} sequences of {length} {args.tokenizer} tokens, "
        f"vocabulary {tokenizer.vocabulary_size} + [MASK]"
    )

    def masked(ids, seed):
        batch = mask_tokens(ids, vocab_size, mask_id, selection_rate=args.mask_rate, seed=seed)
        x = {"token_ids": batch["token_ids"], "mask_positions": batch["mask_positions"]}
        return x, batch["mask_ids"], batch["mask_weights"]

    copies = [masked(pre_train, args.seed * 1000 + c) for c in range(args.mask_copies)]
    x_pre = {k: np.concatenate([c[0][k] for c in copies]) for k in copies[0][0]}
    y_pre = np.concatenate([c[1] for c in copies])
    w_pre = np.concatenate([c[2] for c in copies])
    val_pre = masked(pre_val, args.seed * 1000 + 999)
    if args.num_labelled is not None:
        train_texts, y_train = train_texts[: args.num_labelled], y_train[: args.num_labelled]
    return types.SimpleNamespace(
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        class_names=class_names,
        classify_train=(data.encode_texts(tokenizer, list(train_texts), length), y_train),
        classify_val=(data.encode_texts(tokenizer, list(val_texts), length), y_val),
        mlm_train=(x_pre, y_pre, w_pre),
        mlm_val=val_pre,
    )


def print_comparison(results, y_val, class_names):
    """Print the validation accuracy of the fine-tuned and the from-scratch classifier."""
    majority = float(np.max(np.bincount(y_val)) / len(y_val))
    print(f"Validation accuracy ({len(y_val)} examples, {len(class_names)} classes {class_names}):")
    print(f"  fine-tuned from the MLM checkpoint: {results['finetune']['val_accuracy']:.3f}")
    print(f"  trained from scratch:               {results['scratch']['val_accuracy']:.3f}")
    print(f"  majority class:                     {majority:.3f}")
