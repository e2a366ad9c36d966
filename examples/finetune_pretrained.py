"""
Title: Fine-tune a pretrained checkpoint, with its attention swapped
Description: Load a keras-hub or Hugging Face checkpoint into our builder, optionally replace its
attention core, fine-tune it with LoRA on text, and generate before and after.

``kt.models.from_keras_hub`` maps a checkpoint (GPT-2, Llama, Llama 3, Mistral, Gemma, Bloom,
Mixtral) to ``kt.models.build_decoder_lm`` with the same logits; any builder argument can be
overridden (``attention=``, ``position=``, ...), and every weight that still fits is carried::

    python examples/finetune_pretrained.py                      # offline: a small random GPT-2
    python examples/finetune_pretrained.py gpt2_base_en         # a keras-hub preset (downloads)
    python examples/finetune_pretrained.py ./my-hf-llama --attention sliding_window:64
    python examples/finetune_pretrained.py ./preset --lora 0 --data my_notes.txt
    python examples/finetune_pretrained.py --help

With no checkpoint it builds a small random GPT-2-shaped keras-hub backbone over the byte
vocabulary (260 ids) and saves it as a local preset in the run folder, so everything runs
offline. The run folder gets TensorBoard logs and ``finetuned.keras`` (LoRA merged).
"""

"""
## Setup

The flags are parsed before Keras is imported, so ``--help`` answers at once.
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
parser.add_argument("checkpoint", nargs="?", help="keras-hub preset name/handle or local folder")
parser.add_argument(
    "--attention",
    default=None,
    help="swap the attention: a name (performer), name:window (sliding_window:64) or JSON",
)
parser.add_argument("--lora", type=int, default=8, help="LoRA rank; 0 = full fine-tune")
parser.add_argument("--data", default=None, help="a text file (default: built-in text)")
parser.add_argument("--seq-len", type=int, default=64)
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--steps", type=int, default=60, help="training steps")
parser.add_argument("--learning-rate", type=float, default=None)
parser.add_argument("--max-chars", type=int, default=60_000, help="built-in text size")
parser.add_argument("--prompt", default="The ")
parser.add_argument("--sample-length", type=int, default=32)
parser.add_argument("--logdir", default="runs/finetune_pretrained")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity")
args = parser.parse_args()

import keras
import numpy as np

import keras_transformers as kt

keras.utils.set_random_seed(args.seed)
if os.path.exists(os.path.join(args.logdir, "finetuned.keras")):  # never overwrite a finished run
    raise SystemExit(f"error: --logdir {args.logdir} holds a finished run; pass another --logdir")
os.makedirs(args.logdir, exist_ok=True)

"""
## The checkpoint

A preset name or folder goes to keras-hub (``Backbone.from_preset``: a keras-hub preset
directory or a Hugging Face folder with ``config.json`` and ``*.safetensors``). Without one we
save a random GPT-2-shaped preset, the same format a real preset has.
"""


def random_gpt2_preset(path):
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=260,  # the byte tokenizer's ids
        num_layers=2,
        num_heads=4,
        hidden_dim=64,
        intermediate_dim=256,
        max_sequence_length=128,
    )
    backbone.save_to_preset(path)
    return path


checkpoint = args.checkpoint or random_gpt2_preset(os.path.join(args.logdir, "random_gpt2"))

"""
## The tokenizer

A preset that ships a keras-hub tokenizer uses it; otherwise (the random preset, a folder with
weights only) the byte tokenizer, whose 260 ids must fit the checkpoint's vocabulary.
"""


class Tokens:
    def __init__(self, source):
        self.hub = None
        try:
            import keras_hub

            self.hub = keras_hub.models.Tokenizer.from_preset(source)
        except Exception:  # no tokenizer assets in this checkpoint: bytes
            self.bytes = kt.data.ByteTokenizer()

    def encode(self, text):
        if self.hub is not None:
            return np.asarray(keras.ops.convert_to_numpy(self.hub(text)), "int32")
        return self.bytes.encode(text)

    def decode(self, ids):
        if self.hub is not None:
            return str(keras.ops.convert_to_numpy(self.hub.detokenize(ids)).item().decode())
        return self.bytes.decode(ids)


tokens = Tokens(checkpoint)

"""
## Load, optionally swapping the attention

The report lists what was copied and which weights are new (initialized, not from the
checkpoint). An attention core that blocks the sequence needs a fixed length: ``max_length``
is set to ``--seq-len`` (a learned position table keeps its first rows).
"""


def attention_spec(text):
    if text.startswith("{"):
        return json.loads(text)
    name, _, window = text.partition(":")
    return {"name": name, "window": int(window)} if window else name


overrides = {"dropout": 0.0}
if args.attention:
    overrides.update(attention=attention_spec(args.attention), max_length=args.seq_len)
model = kt.models.from_keras_hub(checkpoint, **overrides)
report = model.conversion_report
print(f"loaded {report.family}: {len(report.copied)} weights copied, {len(report.new)} new")
vocabulary = model.token_embedding.input_dim


def sample(title):
    prompt = tokens.encode(args.prompt)
    length = min(len(prompt) + args.sample_length, model.get_config()["max_length"])
    out = model.generate(prompt[None], max_length=length, sampler="greedy")
    print(f"{title}: {tokens.decode(out[0])!r}")


sample("before")

"""
## Data

Built-in text (standard-library docstrings, nothing downloaded) or ``--data``, cut into
next-token windows of ``--seq-len`` tokens.
"""

text = kt.data.load_text(args.data) if args.data else kt.data.builtin_text(args.max_chars)
ids = tokens.encode(text)
if ids.max() >= vocabulary:
    raise SystemExit(f"the tokenizer's ids reach {ids.max()}: the checkpoint has {vocabulary}")
x, y = kt.data.make_lm_windows(ids, args.seq_len, stride=args.seq_len // 2)
print(f"data: {len(text):,} characters -> {len(ids):,} tokens -> {len(x)} windows")

"""
## Fine-tune: LoRA by default

``kt.models.enable_lora`` freezes the model and adds rank-``r`` updates to the attention and
feed-forward projections (new weights from a swapped core stay frozen at their
initialization under LoRA; ``--lora 0`` trains everything).
"""

if args.lora:
    kt.models.enable_lora(model, rank=args.lora, targets=("query", "value", "output"))
trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
print(f"trainable parameters: {trainable:,} of {model.count_params():,}")
learning_rate = args.learning_rate or (2e-3 if args.lora else 3e-4)
model.compile(
    optimizer=keras.optimizers.AdamW(learning_rate),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
)
held_out = (x[-4 * args.batch_size :], y[-4 * args.batch_size :])  # never trained on
x, y = x[: -4 * args.batch_size], y[: -4 * args.batch_size]
before = model.evaluate(*held_out, batch_size=args.batch_size, verbose=0)
steps = min(args.steps, max(1, len(x) // args.batch_size))
model.fit(
    x,
    y,
    batch_size=args.batch_size,
    epochs=-(-args.steps // steps),
    steps_per_epoch=steps,
    callbacks=[keras.callbacks.TensorBoard(os.path.join(args.logdir, "logs"))],
    verbose=args.verbose,
)
after = model.evaluate(*held_out, batch_size=args.batch_size, verbose=0)
print(f"held-out loss: {before:.3f} -> {after:.3f}")
sample("after")

"""
## Save

LoRA is merged into the kernels, so the file is a plain model of our builder:
``keras.saving.load_model(path).generate(...)`` needs nothing else.
"""

if args.lora:
    kt.models.merge_lora(model)
path = os.path.join(args.logdir, "finetuned.keras")
model.save(path)
print(f"saved {path}")
if tokens.hub is None:  # examples/generate.py reads tokenizer.json beside the checkpoint
    tokens.bytes.save(os.path.join(args.logdir, "tokenizer.json"))
    print(f"sample from it: python examples/generate.py --model {path}")
