"""The text-classifier recipe's data and report.

Used by ``examples/train_classifier.py`` around its own
``build_encoder_classifier -> compile -> fit``.
"""

import json
import os

import numpy as np

from keras_transformers import data


def load_data(args):
    """Read the texts, fit and save the tokenizer and class names, encode both splits.

    ``--seq-len`` defaults here (192 for the byte tokenizer, else 64) and is written back to
    ``args``.

    Returns:
        ``tokenizer, class_names, (x_train, y_train), (x_val, y_val)``; ``x`` arrays ``(N, L)``.
    """
    if args.data is None:
        texts, labels, class_names = data.builtin_classification(args.num_examples, seed=args.seed)
        source = "built-in task (which stdlib package family a docstring sentence is from)"
    elif os.path.isdir(args.data):
        texts, labels, class_names = data.load_class_folders(args.data, seed=args.seed)
        source = args.data
    else:
        texts, labels, class_names = data.load_classification_file(
            args.data, text_column=args.text_column, label_column=args.label_column
        )
        source = args.data
    (train_texts, y_train), (val_texts, y_val) = data.train_val_split(
        np.asarray(texts, dtype=object), labels, val_fraction=args.val_fraction, seed=args.seed
    )
    return _encode(args, source, texts, class_names, train_texts, y_train, val_texts, y_val)


def _encode(args, source, texts, class_names, train_texts, y_train, val_texts, y_val):
    tokenizer = data.train_tokenizer(
        args.tokenizer, list(train_texts), vocabulary_size=args.vocab_size
    )
    args.seq_len = args.seq_len or (192 if args.tokenizer == "byte" else 64)
    tokenizer.save(os.path.join(args.logdir, "tokenizer.json"))
    with open(os.path.join(args.logdir, "classes.json"), "w", encoding="utf-8") as handle:
        json.dump(class_names, handle)
    add_bos = args.pooling == "cls"
    x_train = data.encode_texts(tokenizer, list(train_texts), args.seq_len, add_bos=add_bos)
    x_val = data.encode_texts(tokenizer, list(val_texts), args.seq_len, add_bos=add_bos)
    print(
        f"data: {source}: {len(texts)} texts, {len(class_names)} classes {class_names}; "
        f"{type(tokenizer).__name__} vocabulary {tokenizer.vocabulary_size}, length {args.seq_len}"
    )
    return tokenizer, class_names, (x_train, y_train), (x_val, y_val)


def print_accuracy(model, args, x_val, y_val, num_classes):
    """Evaluate on the validation split; print the accuracy next to the majority-class rate."""
    results = model.evaluate(x_val, y_val, batch_size=args.batch_size, verbose=0, return_dict=True)
    majority = float(np.max(np.bincount(y_val, minlength=num_classes)) / len(y_val))
    print(
        f"Validation accuracy: {results['accuracy']:.3f} "
        f"(majority class: {majority:.3f}, {len(y_val)} examples)"
    )
    return float(results["accuracy"])
