"""Tokenizers and corpora."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bdh.data import bundled_corpus_path, load_corpus, resolve_corpus_path
from bdh.errors import DataError, TokenizerError
from bdh.tokenizers import ByteTokenizer, CharTokenizer, tokenizer_from_dict


@given(st.text())
def test_byte_tokenizer_round_trips_any_text(text: str) -> None:
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text


@given(st.text(min_size=1))
def test_byte_stream_decoder_equals_batch_decode(text: str) -> None:
    tok = ByteTokenizer()
    decoder = tok.stream_decoder()
    pieces = [decoder.decode([i]) for i in tok.encode(text)]
    assert "".join(pieces) + decoder.flush() == text


def test_char_tokenizer_round_trip_and_unknown_character() -> None:
    tok = CharTokenizer.from_text("hello world")
    assert tok.vocab_size == len(set("hello world"))
    assert tok.decode(tok.encode("low hell")) == "low hell"
    with pytest.raises(TokenizerError, match="'z'"):
        tok.encode("hello zoo")
    again = tokenizer_from_dict(tok.to_dict())
    assert again.encode("hello") == tok.encode("hello")


def test_bundled_corpus_is_tiny_shakespeare() -> None:
    path = bundled_corpus_path()
    assert path.is_file() and path.stat().st_size == 1_115_394
    assert resolve_corpus_path(None) == path


def test_byte_corpus_is_a_memory_map_split_90_10() -> None:
    corpus, tok = load_corpus(None, "byte")
    assert isinstance(corpus.train, np.memmap)
    total = len(corpus.train) + len(corpus.val)
    assert total == 1_115_394 and len(corpus.train) == int(total * 0.9)
    assert tok.decode(list(corpus.train[:9])) == "First Cit"
    g = torch.Generator().manual_seed(0)
    x, y = corpus.batch("train", 4, 32, g)
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_char_corpus_builds_its_vocabulary(tmp_path) -> None:
    f = tmp_path / "c.txt"
    f.write_text("abcabcabd" * 50)
    corpus, tok = load_corpus(f, "char")
    assert tok.vocab_size == 4
    assert tok.decode(corpus.train[:4].tolist()) == "abca"


def test_directory_corpus_and_data_dir(tmp_path, monkeypatch) -> None:
    d = tmp_path / "data" / "books"
    d.mkdir(parents=True)
    (d / "a.txt").write_text("alpha " * 100)
    (d / "b.txt").write_text("beta " * 100)
    monkeypatch.setenv("BDH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BDH_CACHE_DIR", str(tmp_path / "cache"))
    corpus, tok = load_corpus("books", "byte")
    text = tok.decode(list(corpus.train) + list(corpus.val))
    assert text == "alpha " * 100 + "beta " * 100


@pytest.mark.parametrize("content", ["", "short"])
def test_empty_or_short_corpus_is_refused(tmp_path, content) -> None:
    f = tmp_path / "c.txt"
    f.write_text(content)
    with pytest.raises(DataError):
        corpus, _ = load_corpus(f, "byte")
        corpus.check_block_size(64)


def test_missing_corpus_is_refused() -> None:
    with pytest.raises(DataError, match="no corpus"):
        load_corpus("/nonexistent/corpus.txt")
