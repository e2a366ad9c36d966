"""Pre-train a small BERT-style encoder with masked language modelling, then fine-tune it.

Phase 1 pre-trains an encoder on the built-in text (standard-library docstrings, nothing is
downloaded) with BERT's masked-LM objective (30% of the tokens selected by default: 80% [MASK],
10% random, 10% kept; the loss is the mean over the selected tokens) and saves the checkpoint.
Phase 2 builds an encoder classifier for the built-in 4-class task (which package family a
docstring sentence comes from), loads the pre-trained encoder weights into it and fine-tunes on
a few labelled examples (``--num-labelled``, 200 by default: where pre-training is expected to
matter most); phase 3 trains the same classifier from scratch on the same examples with the same
settings. It prints the masked-token accuracy and both validation accuracies. Docstrings that
contain a validation sentence of the classification task are left out of the pre-training text::

    python examples/pretrain_bert.py
    python examples/pretrain_bert.py --num-labelled 960 --finetune-epochs 5   # all the labels
    python examples/pretrain_bert.py --attention local --position rope
    python examples/pretrain_bert.py --help

Logs go to ``<logdir>/pretrain``, ``<logdir>/finetune`` and ``<logdir>/scratch`` (TensorBoard,
``best.keras``/``last.keras``); the pre-trained model is ``<logdir>/pretrain/pretrainer.keras``.
Start the same command again with ``--logdir <that folder>`` to resume an interrupted run:
finished phases are skipped and an interrupted phase resumes from its last finished epoch
(``keras.callbacks.BackupAndRestore``).
"""

import argparse
import json
import os
import sys
import time

from keras_transformers.recipes.argtypes import layer_spec_or_none, number, positive_int

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build_parser(prog=None):
    p = argparse.ArgumentParser(
        prog=prog,
        description=" ".join(__doc__.split("\n\n")[:2]).replace("\n", " ").replace("::", "."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    train.add_argument("--batch-size", type=positive_int, default=32, help="batch size")
    train.add_argument(
        "--steps-per-epoch",
        type=positive_int,
        default=None,
        help="batches per epoch in every phase (default: one pass over the data)",
    )
    train.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    train.add_argument("--warmup-steps", type=int, default=None, help="default: 5%%, <= 100")
    train.add_argument("--weight-decay", type=number(0.0), default=0.01, help="AdamW decay")
    train.add_argument("--seed", type=int, default=0, help="seed of data, masks and init")
    train.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="XLA-compile the train step (default: Keras decides)",
    )
    train.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="fit() verbosity: 0 silent, 1 progress bar, 2 one line per epoch",
    )
    train.add_argument(
        "--logdir",
        default=None,
        help="run folder (default: runs/pretrain_bert/<time>-<attention>-<position>); pass the "
        "folder of an interrupted run to resume it",
    )
    return p


def main(argv=None, prog=None):
    """Parse ``argv``, run the three phases; return a dict of the results."""
    args = build_parser(prog).parse_args(argv)
    if args.d_model % args.heads:
        raise SystemExit(
            f"error: --d-model={args.d_model} must be divisible by --heads={args.heads}"
        )
    # Imported after parsing so that --help and argument errors answer at once.
    import keras
    import numpy as np

    from keras_transformers import data
    from keras_transformers.models.bert import (
        build_bert_pretrainer,
        load_pretrained_encoder,
        mask_token_id_for,
        mask_tokens,
    )
    from keras_transformers.models.encoder_classifier import build_encoder_classifier
    from keras_transformers.recipes import run

    started = time.time()
    args.example = "pretrain_bert"
    run.check_specs(args)
    keras.utils.set_random_seed(args.seed)
    logdir = run.prepare_logdir(args)
    print(f"keras {keras.__version__} (backend: {keras.backend.backend()}); logdir: {logdir}")
    results_path = os.path.join(logdir, "results.json")
    results = {}
    if os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as handle:
            results = json.load(handle)
        print(f"resuming: finished phases {sorted(results)}")

    def save_results():
        with open(results_path, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)

    # ----- data ------------------------------------------------------------------------------
    with run.user_errors("--num-examples"):
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
    tokenizer.save(os.path.join(logdir, "tokenizer.json"))
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
    sizes = dict(
        d_model=args.d_model,
        num_heads=args.heads,
        num_layers=args.layers,
        ff_dim=args.ff_dim,
        attention=args.attention,
        position=args.position,
        dropout=args.dropout,
    )

    def phase_args(lr):
        phase = argparse.Namespace(**vars(args))
        phase.lr = lr
        return phase

    def fit(model, phase_dir, lr, epochs, x, y, w, validation):
        os.makedirs(phase_dir, exist_ok=True)
        steps = run.steps_per_epoch(args, len(y))
        total = steps * epochs
        # masked LM: average over the selected tokens only (not over every slot of P)
        reduction = "sum_over_batch_size" if w is None else "mean_with_sample_weight"
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        if w is None:
            run.compile_model(model, phase_args(lr), total, loss=loss, metrics=[accuracy])
        else:
            run.compile_model(model, phase_args(lr), total, loss=loss, weighted_metrics=[accuracy])
        model.fit(
            x,
            y,
            sample_weight=w,
            batch_size=args.batch_size,
            steps_per_epoch=args.steps_per_epoch,
            epochs=epochs,
            validation_data=validation,
            callbacks=run.make_callbacks(phase_dir),
            verbose=args.verbose,
        )
        return model

    # ----- phase 1: masked-LM pre-training ----------------------------------------------------
    pre_dir = os.path.join(logdir, "pretrain")
    checkpoint = os.path.join(pre_dir, "pretrainer.keras")
    if "pretrain" not in results:
        print(f"Phase 1: masked-LM pre-training on {len(y_pre)} masked sequences")
        keras.utils.set_random_seed(args.seed)
        pretrainer = build_bert_pretrainer(
            vocab_size, length, selection_rate=args.mask_rate, **sizes
        )
        print(f"pre-trainer: {pretrainer.count_params():,} parameters")
        fit(
            pretrainer,
            pre_dir,
            args.pretrain_lr,
            args.pretrain_epochs,
            x_pre,
            y_pre,
            w_pre,
            val_pre,
        )
        pretrainer.save(checkpoint)
        mlm = pretrainer.evaluate(
            val_pre[0],
            val_pre[1],
            sample_weight=val_pre[2],
            batch_size=args.batch_size,
            verbose=0,
            return_dict=True,
        )
        targets = val_pre[1][val_pre[2] > 0]
        counts = np.bincount(y_pre[w_pre > 0], minlength=vocab_size)
        results["pretrain"] = {
            "mlm_accuracy": float(mlm["accuracy"]),
            "mlm_loss": float(mlm["loss"]),
            "most_frequent_token_accuracy": float(np.mean(targets == np.argmax(counts))),
            "checkpoint": checkpoint,
        }
        save_results()
    pre = results["pretrain"]
    print(
        f"Masked-token accuracy on held-out sequences: {pre['mlm_accuracy']:.3f} "
        f"(always predicting the most frequent token: {pre['most_frequent_token_accuracy']:.3f})"
    )

    # ----- phases 2 and 3: fine-tune from the checkpoint vs train from scratch ----------------
    if args.num_labelled is not None:
        train_texts, y_train = train_texts[: args.num_labelled], y_train[: args.num_labelled]
    x_train = data.encode_texts(tokenizer, list(train_texts), length)
    x_val = data.encode_texts(tokenizer, list(val_texts), length)
    for phase in ("finetune", "scratch"):
        if phase in results:
            continue
        label = "fine-tuning the pre-trained encoder" if phase == "finetune" else "from scratch"
        print(
            f"Phase {2 if phase == 'finetune' else 3}: classifier {label} "
            f"on {len(y_train)} labelled examples"
        )
        keras.utils.set_random_seed(args.seed)  # same head initialisation and data order
        classifier = build_encoder_classifier(vocab_size, len(class_names), length, **sizes)
        if phase == "finetune":
            copied = load_pretrained_encoder(classifier, checkpoint)
            print(f"loaded {', '.join(copied)} from {checkpoint}")
            if args.freeze_embedding:
                classifier.get_layer("text_encoder").get_layer("token_embedding").trainable = False
                print("token embedding frozen")
        fit(
            classifier,
            os.path.join(logdir, phase),
            args.finetune_lr,
            args.finetune_epochs,
            x_train,
            y_train,
            None,
            (x_val, y_val),
        )
        scores = classifier.evaluate(
            x_val, y_val, batch_size=args.batch_size, verbose=0, return_dict=True
        )
        results[phase] = {"val_accuracy": float(scores["accuracy"])}
        save_results()
    majority = float(np.max(np.bincount(y_val)) / len(y_val))
    print(f"Validation accuracy ({len(y_val)} examples, {len(class_names)} classes {class_names}):")
    print(f"  fine-tuned from the MLM checkpoint: {results['finetune']['val_accuracy']:.3f}")
    print(f"  trained from scratch:               {results['scratch']['val_accuracy']:.3f}")
    print(f"  majority class:                     {majority:.3f}")
    print(f"Finished in {time.time() - started:.1f} s.")
    print(f"Logs and checkpoints (pretrain/, finetune/, scratch/): {logdir}")
    print(f"View the curves with:\n  tensorboard --logdir {logdir}")
    return results


if __name__ == "__main__":
    main(prog=os.path.basename(__file__))
    sys.exit(0)
