"""keras-hub tokenizers behind the package interface: ids, reserved layout, save/load."""

import keras_hub
import numpy as np
import pytest

import keras_transformers as kt

CORPUS = [
    "the cat sat on the mat and the dog sat on the log",
    "attention weights sum to one over the keys",
    "queries keys and values are linear maps of the tokens",
] * 40


def test_hub_byte_matches_numpy_byte_tokenizer():
    hub, ours = kt.data.HubByteTokenizer(), kt.data.ByteTokenizer()
    text = "héllo, wörld €"
    np.testing.assert_array_equal(hub.encode(text, add_bos=True), ours.encode(text, add_bos=True))
    assert hub.vocabulary_size == ours.vocabulary_size == 260
    assert hub.decode(hub.encode(text)) == text


def test_codepoint_ids_and_unknowns():
    tok = kt.data.CodepointTokenizer(max_codepoint=0x250)
    ids = tok.encode("aé€")
    assert ids.tolist() == [ord("a") + 4, ord("é") + 4, kt.data.UNK_ID]  # € is above U+024F
    assert tok.decode(tok.encode("héllo")) == "héllo"
    assert tok.vocabulary_size == 0x250 + 4


def test_wordpiece_trained_with_keras_hub_tools(tmp_path):
    tok = kt.data.WordPieceTokenizer.fit(CORPUS, vocabulary_size=80)
    assert tok.vocabulary[:5] == list(kt.data.WORDPIECE_RESERVED)
    assert tok.vocabulary_size <= 80
    ids = tok.encode("the cat sat on the log", add_bos=True, add_eos=True)
    assert ids[0] == kt.data.BOS_ID and ids[-1] == kt.data.EOS_ID
    assert ids.min() >= 0 and ids.max() < tok.vocabulary_size
    assert tok.decode(ids) == "the cat sat on the log"
    # Identical to keras-hub's own layer on the same vocabulary.
    hub = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=tok.vocabulary, lowercase=False)
    np.testing.assert_array_equal(tok.encode("values are maps"), np.asarray(hub("values are maps")))
    # An unseen symbol becomes [UNK] = the package's unk id.
    assert kt.data.UNK_ID in tok.encode("zebra ψ").tolist()
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    again = kt.data.load_tokenizer(path)
    assert isinstance(again, kt.data.WordPieceTokenizer)
    text = "keys and values of the cat"
    np.testing.assert_array_equal(again.encode(text), tok.encode(text))


def test_bpe_reserved_ids_are_remapped_and_round_trip(tmp_path):
    tok = kt.data.BPETokenizer.fit(CORPUS, vocabulary_size=60)
    assert tok.vocabulary_size == 60
    hub = keras_hub.tokenizers.SentencePieceTokenizer(proto=tok.proto)
    assert [hub.id_to_token(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    text = "the dog sat on the mat"
    raw = np.asarray(hub(text))
    ids = tok.encode(text)
    np.testing.assert_array_equal(ids[raw >= 4], raw[raw >= 4])  # pieces keep their ids
    assert tok.decode(ids) == text
    unknown = tok.encode("ψ")  # not in the corpus -> <unk>, which is id 3 in the package
    assert kt.data.UNK_ID in unknown.tolist() and 1 not in unknown.tolist()
    path = tmp_path / "bpe.json"
    tok.save(path)
    np.testing.assert_array_equal(kt.data.load_tokenizer(path).encode(text), ids)


def test_train_tokenizer_kinds_and_errors():
    assert isinstance(kt.data.train_tokenizer("byte", CORPUS), kt.data.ByteTokenizer)
    assert isinstance(kt.data.train_tokenizer("word", CORPUS, 30), kt.data.WordTokenizer)
    with pytest.raises(ValueError, match="tokenizer='sentencepiece'.*allowed values.*wordpiece"):
        kt.data.train_tokenizer("sentencepiece", CORPUS)
    with pytest.raises(ValueError, match="texts: the training corpus is empty"):
        kt.data.WordPieceTokenizer.fit(["", "   "], 50)
    with pytest.raises(ValueError, match="vocabulary_size=3"):
        kt.data.BPETokenizer.fit(CORPUS, 3)


def test_bpe_on_lines_all_over_the_sentence_piece_limit_is_a_clear_error():
    long_line = "word " * 1000  # 5,000 bytes: SentencePiece skips it
    with pytest.raises(ValueError, match="every line is longer than SentencePiece's limit"):
        kt.data.BPETokenizer.fit([long_line, long_line + "x"], vocabulary_size=60)
