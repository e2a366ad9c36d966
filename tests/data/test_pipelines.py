"""tf.data / PyDataset pipelines over the user-data loaders."""

import json

import keras
import numpy as np
import pytest

import keras_transformers as kt


@pytest.mark.parametrize("format", ["tf", "pydataset"])
def test_lm_dataset_from_a_text_file_trains(tmp_path, format):
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    train, val = kt.data.lm_dataset(
        path, kt.data.ByteTokenizer(), seq_len=16, batch_size=8, format=format
    )
    x, y = next(iter(train))
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == y.shape == (8, 16)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
    model = kt.models.build_decoder_lm(260, 16, d_model=16, num_heads=2, num_layers=1)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(train, validation_data=val, epochs=1, verbose=0)
    assert np.isfinite(history.history["val_loss"][0])


def test_pipelines_shuffle_each_epoch_with_a_seed():
    x = np.arange(20)[:, None]
    pipe = kt.data.make_pipeline(x, x, batch_size=20, shuffle=True, seed=3, format="pydataset")
    first = pipe[0][0][:, 0].copy()
    pipe.on_epoch_end()
    second = pipe[0][0][:, 0]
    assert sorted(first) == sorted(second) == list(range(20))
    assert not np.array_equal(first, second)
    again = kt.data.make_pipeline(x, x, batch_size=20, shuffle=True, seed=3, format="pydataset")
    np.testing.assert_array_equal(again[0][0][:, 0], first)  # same seed, same order


def test_classification_dataset_from_jsonl_and_folders(tmp_path):
    rows = [{"text": f"good movie {i}", "label": "pos"} for i in range(10)]
    rows += [{"text": f"bad film {i}", "label": "neg"} for i in range(10)]
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    train, val, classes = kt.data.classification_dataset(
        path, kt.data.ByteTokenizer(), seq_len=12, batch_size=4
    )
    assert classes == ["neg", "pos"]
    x, y = next(iter(train))
    assert tuple(x.shape) == (4, 12) and tuple(y.shape) == (4,)
    folders = tmp_path / "folders"
    for name in ("a", "b"):
        (folders / name).mkdir(parents=True)
        for i in range(3):
            (folders / name / f"{i}.txt").write_text(f"text {name} {i}")
    _, _, classes = kt.data.classification_dataset(
        folders, kt.data.ByteTokenizer(), seq_len=8, format="pydataset"
    )
    assert classes == ["a", "b"]


def test_seq2seq_dataset_teacher_forcing(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(f"abc{i}\tcba{i}" for i in range(10)))
    tok = kt.data.ByteTokenizer()
    train, _ = kt.data.seq2seq_dataset(path, tok, tok, 6, 7, batch_size=2, format="pydataset")
    (src, tgt_in), tgt_out = train[0]
    assert src.shape == (2, 6) and tgt_in.shape == tgt_out.shape == (2, 7)
    assert (tgt_in[:, 0] == kt.data.BOS_ID).all()
    shifted = np.where(tgt_out[:, :-1] == kt.data.EOS_ID, kt.data.PAD_ID, tgt_out[:, :-1])
    np.testing.assert_array_equal(tgt_in[:, 1:], shifted)  # decoder input = target shifted right


def test_clear_errors(tmp_path):
    tok = kt.data.ByteTokenizer()
    with pytest.raises(FileNotFoundError):
        kt.data.lm_dataset(tmp_path / "missing.txt", tok, 8)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        kt.data.lm_dataset(empty, tok, 8)
    with pytest.raises(ValueError, match="format='numpy': allowed values are tf, pydataset"):
        kt.data.make_pipeline(np.zeros((2, 2)), format="numpy")
    one_class = tmp_path / "one.csv"
    one_class.write_text("text,label\na,x\nb,x\n")
    with pytest.raises(ValueError, match="one class"):
        kt.data.classification_dataset(one_class, tok, 8)
    missing_column = tmp_path / "cols.csv"
    missing_column.write_text("body,label\na,x\nb,y\n")
    with pytest.raises(ValueError, match="text"):
        kt.data.classification_dataset(missing_column, tok, 8)
