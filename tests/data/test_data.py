"""Tests for keras_transformers.data (pure numpy, no backend needed)."""

import json

import numpy as np
import pytest

from keras_transformers.data import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    ArithmeticTask,
    ByteTokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    arithmetic_task,
    builtin_classification,
    builtin_text,
    contains_both_task,
    copy_task,
    encode_pairs,
    encode_texts,
    load_class_folders,
    load_classification_file,
    load_text,
    load_tokenizer,
    load_tsv_pairs,
    make_lm_windows,
    reverse_task,
    sort_task,
    train_val_split,
)

# --------------------------------------------------------------------------- text


def test_builtin_text_is_large_real_and_deterministic():
    text = builtin_text()
    assert isinstance(text, str)
    assert 100_000 < len(text) <= 200_000
    assert text == builtin_text()
    assert "Return" in text  # real English docstrings
    assert builtin_text(seed=1) != text
    assert len(builtin_text(max_chars=1000)) <= 1000
    with pytest.raises(ValueError, match="max_chars"):
        builtin_text(max_chars=0)


def test_load_text_file_and_folder(tmp_path):
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.md").write_text("first", encoding="utf-8")
    (tmp_path / "skip.bin").write_text("ignored", encoding="utf-8")
    assert load_text(tmp_path / "b.txt") == "second"
    assert load_text(tmp_path) == "first\n\nsecond"


def test_load_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_text(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty: expected UTF-8 text"):
        load_text(empty)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ValueError, match="is empty: expected UTF-8 text"):
        load_text(folder)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ValueError, match="UTF-8"):
        load_text(bad)


def test_make_lm_windows_shift_property():
    ids = np.arange(100)
    x, y = make_lm_windows(ids, seq_len=10)
    assert x.shape == y.shape == (9, 10)
    assert x.dtype == y.dtype == np.int32
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    np.testing.assert_array_equal(y, x + 1)
    np.testing.assert_array_equal(x[1], np.arange(10, 20))
    x2, y2 = make_lm_windows(ids, seq_len=10, stride=3)
    assert x2.shape == ((100 - 1 - 10) // 3 + 1, 10)
    np.testing.assert_array_equal(y2, x2 + 1)
    assert make_lm_windows(ids[:11], seq_len=10)[0].shape == (1, 10)
    with pytest.raises(ValueError, match="seq_len"):
        make_lm_windows(ids[:10], seq_len=10)


def test_train_val_split():
    x, y = np.arange(20).reshape(10, 2), np.arange(10)
    (xt, yt), (xv, yv) = train_val_split(x, y, val_fraction=0.2)
    assert xt.shape == (8, 2) and xv.shape == (2, 2)
    np.testing.assert_array_equal(yv, [8, 9])
    a = train_val_split(x, y, val_fraction=0.3, seed=0)
    b = train_val_split(x, y, val_fraction=0.3, seed=0)
    np.testing.assert_array_equal(a[1][1], b[1][1])
    assert sorted(np.concatenate([a[0][1], a[1][1]]).tolist()) == list(range(10))
    (xt, yt), (xv, yv) = train_val_split((x, x * 2), y, val_fraction=0.1)
    assert isinstance(xt, tuple) and xt[1].shape == (9, 2) and xv[0].shape == (1, 2)
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(x, y, val_fraction=1.0)
    with pytest.raises(ValueError, match="different numbers"):
        train_val_split(x, y[:5])


# --------------------------------------------------------------------- tokenizers

SAMPLE = "Héllo, wörld! 123 ✓ tabs\tand\nnewlines."


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    ids = tok.encode(SAMPLE)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert tok.vocabulary_size == 260
    assert ids.min() >= 4 and ids.max() < 260
    assert tok.decode(ids) == SAMPLE
    with_specials = tok.encode(SAMPLE, add_bos=True, add_eos=True)
    assert with_specials[0] == BOS_ID and with_specials[-1] == EOS_ID
    assert tok.decode(np.concatenate([[PAD_ID], with_specials, [PAD_ID]])) == SAMPLE


def test_char_tokenizer_fit_round_trip_and_unknown():
    tok = CharTokenizer.fit("aaabbc")
    assert tok.chars == ["a", "b", "c"]
    np.testing.assert_array_equal(tok.encode("abc"), [4, 5, 6])
    assert tok.encode("abz").tolist() == [4, 5, UNK_ID]
    full = CharTokenizer.fit(SAMPLE)
    assert full.decode(full.encode(SAMPLE)) == SAMPLE
    small = CharTokenizer.fit("aaabbc", max_vocab=6)
    assert small.vocabulary_size == 6 and small.chars == ["a", "b"]
    with pytest.raises(ValueError, match="max_vocab"):
        CharTokenizer.fit("abc", max_vocab=4)


def test_word_tokenizer_round_trip():
    texts = ["The cat sat.", "the DOG sat, happily!", "The end"]
    tok = WordTokenizer.fit(texts, max_vocab=100)
    assert tok.tokenize("The cat, sat!") == ["the", "cat", ",", "sat", "!"]
    ids = tok.encode(texts[1])
    assert UNK_ID not in ids.tolist()
    assert tok.decode(ids) == "the dog sat , happily !"
    assert tok.encode("zebra").tolist() == [UNK_ID]
    assert tok.encode("the")[0] == 4  # most frequent word first
    assert tok.encode("sat !").tolist() == [5, 6]  # ties broken by code point
    with pytest.raises(TypeError, match="single str"):
        WordTokenizer.fit("not a list")


@pytest.mark.parametrize(
    "tok",
    [
        ByteTokenizer(),
        CharTokenizer.fit(SAMPLE, max_vocab=12),
        WordTokenizer.fit([SAMPLE, "more words here"], max_vocab=10),
    ],
    ids=["byte", "char", "word"],
)
def test_tokenizer_save_load_identity(tok, tmp_path):
    path = tmp_path / "sub" / "tok.json"
    tok.save(path)
    for loaded in (type(tok).load(path), load_tokenizer(path), Tokenizer.load(path)):
        assert type(loaded) is type(tok)
        assert loaded.get_config() == tok.get_config()
        assert loaded.vocabulary_size == tok.vocabulary_size
        np.testing.assert_array_equal(loaded.encode(SAMPLE), tok.encode(SAMPLE))
        assert loaded.decode(tok.encode(SAMPLE)) == tok.decode(tok.encode(SAMPLE))


def test_tokenizer_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_tokenizer(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="not a saved tokenizer"):
        load_tokenizer(bad)
    ByteTokenizer().save(tmp_path / "byte.json")
    with pytest.raises(ValueError, match="not a CharTokenizer"):
        CharTokenizer.load(tmp_path / "byte.json")


# ----------------------------------------------------------------- classification


def test_load_csv_tsv_jsonl(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('text,label\n"hello, world",pos\nbad day,neg\nfine,pos\n', "utf-8")
    texts, labels, names = load_classification_file(csv_path)
    assert texts == ["hello, world", "bad day", "fine"]
    assert names == ["neg", "pos"]
    assert labels.dtype == np.int32 and labels.tolist() == [1, 0, 1]

    tsv_path = tmp_path / "d.tsv"
    tsv_path.write_text("sentence\ty\na b\t1\nc d\t0\ne\t10\n", "utf-8")
    texts, labels, names = load_classification_file(tsv_path, "sentence", "y")
    assert texts == ["a b", "c d", "e"]
    assert names == ["0", "1", "10"] and labels.tolist() == [1, 0, 2]

    jsonl_path = tmp_path / "d.jsonl"
    rows = [{"text": "x", "label": 0}, {"text": "y", "label": 1}, {"text": "z", "label": 1}]
    jsonl_path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", "utf-8")
    texts, labels, names = load_classification_file(jsonl_path)
    assert texts == ["x", "y", "z"] and labels.tolist() == [0, 1, 1] and names == ["0", "1"]


def test_classification_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_classification_file(tmp_path / "missing.csv")
    other = tmp_path / "data.xlsx"
    other.write_text("x", "utf-8")
    with pytest.raises(ValueError, match=r"\.csv, \.jsonl, \.tsv"):
        load_classification_file(other)
    empty = tmp_path / "empty.csv"
    empty.write_text("", "utf-8")
    with pytest.raises(ValueError, match="is empty"):
        load_classification_file(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n", "utf-8")
    with pytest.raises(ValueError, match="is empty"):
        load_classification_file(header_only)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("review,label\ngood,1\nbad,0\n", "utf-8")
    with pytest.raises(ValueError, match=r"column 'text' not found.*\['review', 'label'\]"):
        load_classification_file(wrong)
    one = tmp_path / "one.csv"
    one.write_text("text,label\na,x\nb,x\n", "utf-8")
    with pytest.raises(ValueError, match=r"label column 'label' has one class \('x'\)"):
        load_classification_file(one)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "a", "label": 1}\n{oops\n', "utf-8")
    with pytest.raises(ValueError, match="line 2"):
        load_classification_file(bad_json)
    no_label = tmp_path / "nolabel.jsonl"
    no_label.write_text('{"text": "a", "lbl": 1}\n', "utf-8")
    with pytest.raises(ValueError, match=r"column 'label' not found.*\['text', 'lbl'\]"):
        load_classification_file(no_label)


def test_load_class_folders(tmp_path):
    for name, docs in {"neg": ["bad", "awful"], "pos": ["good", "great", "nice"]}.items():
        (tmp_path / name).mkdir()
        for i, doc in enumerate(docs):
            (tmp_path / name / f"{i}.txt").write_text(doc, "utf-8")
    texts, labels, names = load_class_folders(tmp_path, seed=None)
    assert names == ["neg", "pos"]
    assert texts == ["bad", "awful", "good", "great", "nice"]
    assert labels.tolist() == [0, 0, 1, 1, 1]
    shuffled, shuffled_labels, _ = load_class_folders(tmp_path)
    assert sorted(zip(shuffled, shuffled_labels.tolist())) == sorted(zip(texts, labels.tolist()))

    with pytest.raises(FileNotFoundError, match="nothere"):
        load_class_folders(tmp_path / "nothere")
    lonely = tmp_path / "lonely"
    (lonely / "only").mkdir(parents=True)
    with pytest.raises(ValueError, match="need at least 2"):
        load_class_folders(lonely)
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(ValueError, match="is empty"):
        load_class_folders(bare)
    (lonely / "other").mkdir()
    (lonely / "other" / "a.txt").write_text("text", "utf-8")
    with pytest.raises(ValueError, match="only is empty"):
        load_class_folders(lonely)


def test_builtin_classification_balanced_and_deterministic():
    texts, labels, names = builtin_classification(num_examples=402, seed=0)
    assert names == ["asyncio", "email", "http", "unittest"]
    assert len(texts) == 402 and labels.shape == (402,) and labels.dtype == np.int32
    assert np.bincount(labels).tolist() == [101, 101, 100, 100]
    assert len(set(texts)) == 402
    again, again_labels, _ = builtin_classification(num_examples=402, seed=0)
    assert again == texts and np.array_equal(again_labels, labels)
    assert builtin_classification(num_examples=402, seed=1)[0] != texts
    default_texts, default_labels, _ = builtin_classification()
    assert len(default_texts) == 2000 and np.bincount(default_labels).tolist() == [500] * 4
    with pytest.raises(ValueError, match="too large"):
        builtin_classification(num_examples=10**6)


def test_encode_texts_pads_and_truncates():
    tok = WordTokenizer.fit(["a b c d e"])
    out = encode_texts(tok, ["a b", "a b c d e"], max_length=3)
    assert out.shape == (2, 3) and out.dtype == np.int32
    assert out[0, 2] == PAD_ID and (out[1] != PAD_ID).all()
    assert encode_texts(tok, ["a"], max_length=2, add_bos=True)[0, 0] == BOS_ID


# ------------------------------------------------------------------------ seq2seq


def test_load_tsv_pairs_and_errors(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("Hi.\tSalut.\n\nRun!\tCours !\tCC-BY attribution\n", "utf-8")
    assert load_tsv_pairs(path) == (["Hi.", "Run!"], ["Salut.", "Cours !"])
    with pytest.raises(FileNotFoundError, match="gone.tsv"):
        load_tsv_pairs(tmp_path / "gone.tsv")
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n", "utf-8")
    with pytest.raises(ValueError, match="is empty"):
        load_tsv_pairs(empty)
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\nno tab here\n", "utf-8")
    with pytest.raises(ValueError, match="line 2"):
        load_tsv_pairs(bad)


def test_encode_pairs_bos_eos_and_padding():
    tok = CharTokenizer("abc")
    enc, dec_in, dec_out = encode_pairs(tok, tok, ["ab", "abcabc"], ["c", "abcab"], 4, 4)
    assert enc.shape == (2, 4) and dec_in.shape == dec_out.shape == (2, 4)
    assert enc.dtype == dec_in.dtype == dec_out.dtype == np.int32
    assert enc[0].tolist() == [4, 5, 0, 0] and enc[1].tolist() == [4, 5, 6, 4]
    assert dec_in[0].tolist() == [BOS_ID, 6, 0, 0]
    assert dec_out[0].tolist() == [6, EOS_ID, 0, 0]
    np.testing.assert_array_equal(dec_in[1, 1:], dec_out[1, :-1])  # teacher forcing shift
    with pytest.raises(ValueError, match="different lengths"):
        encode_pairs(tok, tok, ["a"], [], 4, 4)


# -------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("task", [copy_task, reverse_task, sort_task])
def test_seq2seq_tasks_shapes_and_determinism(task):
    src, tgt_in, tgt_out = task(num_examples=50, length=7, vocab_size=12, seed=3)
    for array in (src, tgt_in, tgt_out):
        assert array.shape == (50, 7) and array.dtype == np.int32
    assert src.min() >= 4 and src.max() < 12
    assert (tgt_in[:, 0] == BOS_ID).all()
    np.testing.assert_array_equal(tgt_in[:, 1:], tgt_out[:, :-1])
    again = task(num_examples=50, length=7, vocab_size=12, seed=3)
    np.testing.assert_array_equal(again[0], src)
    assert not np.array_equal(task(num_examples=50, length=7, vocab_size=12, seed=4)[0], src)
    with pytest.raises(ValueError, match="vocab_size"):
        task(num_examples=5, length=3, vocab_size=4)


def test_seq2seq_task_targets():
    src, _, tgt = copy_task(20, 6, 10, seed=0)
    np.testing.assert_array_equal(tgt, src)
    src, _, tgt = reverse_task(20, 6, 10, seed=0)
    np.testing.assert_array_equal(tgt, src[:, ::-1])
    src, _, tgt = sort_task(20, 6, 10, seed=0)
    np.testing.assert_array_equal(tgt, np.sort(src, axis=1))
    assert (np.diff(tgt, axis=1) >= 0).all()


def test_arithmetic_task():
    task = arithmetic_task(num_examples=200, max_digits=3, seed=0, operators="+-")
    assert isinstance(task, ArithmeticTask)
    assert task.tokenizer.vocabulary_size == 4 + len("0123456789+-=")
    for question, answer, text in zip(task.questions, task.answers, task.texts):
        assert int(answer) == eval(question)  # noqa: S307 - digits and +/- only
        assert text == f"{question}={answer}"
    assert any(a.startswith("-") for a in task.answers)
    assert task.src.shape == (200, 7) and task.tgt_in.shape == task.tgt_out.shape == (200, 5)
    assert task.tokenizer.decode(task.src[0]) == task.questions[0]
    assert task.tokenizer.decode(task.tgt_out[0]) == task.answers[0]
    assert (task.tgt_in[:, 0] == BOS_ID).all()
    again = arithmetic_task(num_examples=200, max_digits=3, seed=0, operators="+-")
    assert again.questions == task.questions
    np.testing.assert_array_equal(again.src, task.src)
    assert all("-" not in q for q in arithmetic_task(50, 2, seed=1).questions)


def test_contains_both_task():
    x, y = contains_both_task(num_examples=600, length=12, vocab_size=10, seed=0)
    assert x.shape == (600, 12) and y.shape == (600,)
    assert x.dtype == y.dtype == np.int32
    assert x.min() >= 4 and x.max() < 10
    expected = (x == 4).any(axis=1) & (x == 5).any(axis=1)
    np.testing.assert_array_equal(y, expected.astype(np.int32))
    assert 0.4 < y.mean() < 0.6
    negatives = x[y == 0]
    assert ((negatives == 4).any(axis=1)).any() and ((negatives == 5).any(axis=1)).any()
    x2, y2 = contains_both_task(num_examples=600, length=12, vocab_size=10, seed=0)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
    with pytest.raises(ValueError, match="must differ"):
        contains_both_task(10, 8, 10, a=6, b=6)
