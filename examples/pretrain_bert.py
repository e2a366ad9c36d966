"""
Title: BERT masked-LM pre-training, then fine-tuning
Description: Pre-train a small BERT-style encoder with masked language modelling, then fine-tune it.

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

"""
## Setup

The flags are parsed before Keras is imported, so ``--help`` answers at once.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_transformers.recipes import bert

args = bert.parse_args()

import keras
import numpy as np

import keras_transformers as kt
from keras_transformers.recipes import run

started = time.time()
run.setup(args)  # checks --attention/--position, seeds, creates the run folder
results = bert.load_results(args.logdir)  # phases finished by an earlier start are skipped

"""
## Data

Masked-LM sequences of the built-in text, and the labelled sentences of the classification task.
"""

data = bert.load_data(args)
x_pre, y_pre, w_pre = data.mlm_train
x_train, y_train = data.classify_train
x_val, y_val = data.classify_val
sizes = dict(
    d_model=args.d_model,
    num_heads=args.heads,
    num_layers=args.layers,
    ff_dim=args.ff_dim,
    attention=args.attention,
    position=args.position,
    dropout=args.dropout,
)


def fit(model, phase, lr, epochs, x, y, w, validation):
    """Compile with AdamW at ``lr`` and fit, logging to ``<logdir>/<phase>``."""
    phase_dir = os.path.join(args.logdir, phase)
    os.makedirs(phase_dir, exist_ok=True)
    steps = run.steps_per_epoch(args, len(y))
    # masked LM: average over the selected tokens only (not over every slot of P)
    reduction = "sum_over_batch_size" if w is None else "mean_with_sample_weight"
    accuracy = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    model.compile(
        optimizer=kt.optimizers.adamw(
            run.learning_rate(args, steps * epochs, peak=lr), weight_decay=args.weight_decay
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction),
        metrics=accuracy if w is None else None,
        weighted_metrics=None if w is None else accuracy,
        jit_compile=run.jit_compile(args),
    )
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


"""
## Phase 1: masked-LM pre-training

The pre-trainer is the encoder plus an MLM head tied to the token embedding; it predicts the
original token at every selected position.
"""

checkpoint = os.path.join(args.logdir, "pretrain", "pretrainer.keras")
if "pretrain" not in results:
    print(f"Phase 1: masked-LM pre-training on {len(y_pre)} masked sequences")
    keras.utils.set_random_seed(args.seed)
    pretrainer = kt.models.build_bert_pretrainer(
        data.vocab_size, args.seq_len, selection_rate=args.mask_rate, **sizes
    )
    print(f"pre-trainer: {pretrainer.count_params():,} parameters")
    fit(
        pretrainer,
        "pretrain",
        args.pretrain_lr,
        args.pretrain_epochs,
        *data.mlm_train,
        data.mlm_val,
    )
    pretrainer.save(checkpoint)
    x_mlm, y_mlm, w_mlm = data.mlm_val
    mlm = pretrainer.evaluate(
        x_mlm, y_mlm, sample_weight=w_mlm, batch_size=args.batch_size, verbose=0, return_dict=True
    )
    most_frequent = np.argmax(np.bincount(y_pre[w_pre > 0], minlength=data.vocab_size))
    results["pretrain"] = {
        "mlm_accuracy": float(mlm["accuracy"]),
        "mlm_loss": float(mlm["loss"]),
        "most_frequent_token_accuracy": float(np.mean(y_mlm[w_mlm > 0] == most_frequent)),
        "checkpoint": checkpoint,
    }
    bert.save_results(args.logdir, results)
pre = results["pretrain"]
print(
    f"Masked-token accuracy on held-out sequences: {pre['mlm_accuracy']:.3f} "
    f"(always predicting the most frequent token: {pre['most_frequent_token_accuracy']:.3f})"
)

"""
## Phases 2 and 3: fine-tune from the checkpoint vs train from scratch

The same classifier, the same seed and the same labelled examples; only phase 2 starts from the
pre-trained encoder weights.
"""

for number, phase in ((2, "finetune"), (3, "scratch")):
    if phase in results:
        continue
    label = "fine-tuning the pre-trained encoder" if phase == "finetune" else "from scratch"
    print(f"Phase {number}: classifier {label} on {len(y_train)} labelled examples")
    keras.utils.set_random_seed(args.seed)  # same head initialisation and data order
    classifier = kt.models.build_encoder_classifier(
        data.vocab_size, len(data.class_names), args.seq_len, **sizes
    )
    if phase == "finetune":
        copied = kt.models.load_pretrained_encoder(classifier, checkpoint)
        print(f"loaded {', '.join(copied)} from {checkpoint}")
        if args.freeze_embedding:
            classifier.backbone.token_embedding.trainable = False
            print("token embedding frozen")
    fit(
        classifier,
        phase,
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
    bert.save_results(args.logdir, results)

bert.print_comparison(results, y_val, data.class_names)
print(f"Finished in {time.time() - started:.1f} s.")
print(f"Logs and checkpoints (pretrain/, finetune/, scratch/): {args.logdir}")
print(f"View the curves with:\n  tensorboard --logdir {args.logdir}")
