"""TensorBoard callbacks: read the event files back, and serve them with a real tensorboard."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import keras_transformers as kt


def plugin_tags(run_dir):
    """``{plugin: {tags}}`` for the plugins this test looks for, read with tensorboard's reader."""
    ea = EventAccumulator(run_dir, size_guidance={"tensors": 0, "images": 0})
    ea.Reload()
    tags = {}
    for plugin in ("images", "text", "scalars", "hparams"):
        try:
            tags[plugin] = set(ea.PluginTagToContent(plugin))
        except KeyError:
            tags[plugin] = set()
    return tags


@pytest.fixture(scope="module")
def trained_logdir(tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp("tb"))
    tok = kt.data.ByteTokenizer()
    model = kt.models.build_decoder_lm(
        tok.vocabulary_size, 16, d_model=16, num_heads=2, num_layers=2, position="rope"
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).integers(4, 100, size=(32, 16)).astype("int32")
    throughput = kt.callbacks.ThroughputLogger(batch_size=8, tokens_per_example=16, logdir=logdir)
    callbacks = [
        keras.callbacks.TensorBoard(logdir),
        kt.callbacks.AttentionMapLogger(
            x[:1], logdir, max_heads=2, token_labels=[str(t) for t in x[0]]
        ),
        kt.callbacks.TextSampleLogger(["def "], tok.encode, tok.decode, logdir, num_tokens=4),
        throughput,
        kt.callbacks.HParamsLogger(
            {"attention": "full", "position": "rope", "d_model": 16}, logdir
        ),
    ]
    history = model.fit(x, x, batch_size=8, epochs=2, callbacks=callbacks, verbose=0)
    return logdir, history, throughput


def test_event_files_hold_images_text_scalars_hparams(trained_logdir):
    logdir, history, throughput = trained_logdir
    tags = plugin_tags(os.path.join(logdir, "train"))
    images = tags.get("images", set())
    assert any(t.startswith("attention/") and t.endswith("head_1") for t in images), tags
    assert len([t for t in images if t.endswith("head_0")]) == 2  # one per layer
    assert "samples" in tags.get("text", set())
    assert {"epoch_loss", "throughput/tokens_per_second"} <= tags.get("scalars", set())
    assert tags.get("hparams"), tags
    assert throughput.history[-1]["tokens_per_second"] > 0
    assert "tokens_per_second" in history.history


def test_attention_maps_come_from_one_forward_pass(monkeypatch, tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 6, 8)).astype("float32")
    inputs = keras.Input((6, 8))
    layer = kt.attention.MultiHeadAttention(num_heads=2, key_dim=4, causal=True)
    model = keras.Model(inputs, layer(inputs))
    plain = keras.ops.convert_to_numpy(model(x, training=False))
    core_class = type(layer.attention_core)
    calls = []
    original = core_class.compute

    def counting_compute(self, *args, **kwargs):
        calls.append(kwargs.get("context", args[-1]).return_scores)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(core_class, "compute", counting_compute)
    logger = kt.callbacks.AttentionMapLogger(x, str(tmp_path))
    logger.set_model(model)
    maps = logger.collect()
    assert calls == [True]  # the core ran once, and that pass also gave the weights
    (weights,) = maps.values()  # (h, Lq, Lk) of example 0
    assert weights.shape == (2, 6, 6)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert np.abs(weights[:, np.triu(np.ones((6, 6), bool), k=1)]).max() == 0.0  # causal
    assert layer.record_attention_scores is False and layer.last_attention_scores is None
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x, training=False)), plain, atol=1e-6
    )


def test_attention_rollout_is_row_stochastic():
    maps = [np.random.default_rng(i).dirichlet(np.ones(5), size=(2, 5)) for i in range(3)]
    rollout = kt.callbacks.attention_rollout(maps)
    np.testing.assert_allclose(rollout.sum(-1), 1.0, atol=1e-6)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_real_tensorboard_serves_the_runs(trained_logdir):
    logdir, _, _ = trained_logdir
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        logdir,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--load_fast",
        "false",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        runs, deadline = None, time.time() + 60
        while time.time() < deadline:
            try:
                runs = _get_json(f"{base}/data/runs")
                if "train" in runs:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert runs and "train" in runs, runs
        tags = _get_json(f"{base}/data/plugin/scalars/tags")
        assert "epoch_loss" in tags["train"]
        images = _get_json(f"{base}/data/plugin/images/tags")
        assert any(t.startswith("attention/") for t in images["train"])
    finally:
        proc.terminate()
        proc.wait(timeout=20)
