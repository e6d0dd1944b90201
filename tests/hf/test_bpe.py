"""`bdh train --tokenizer bpe --vocab-size N`: a byte-level BPE trained on the training split,
saved with the checkpoint, used by every command, with bits per byte counted in bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bdh.checkpoint import load_checkpoint
from bdh.cli import main
from bdh.data import load_corpus
from bdh.errors import ConfigError, TokenizerError
from bdh.evaluation import _Totals
from bdh.tokenizers import BPETokenizer, tokenizer_from_dict
from bdh.train import TrainConfig
from tests.train.conftest import TINY_FLAGS

TEXT = "the cat sat on the mat. the cat ate. ünïcödé and the mat sat.\n" * 40


def test_bpe_round_trips_any_text_and_counts_bytes() -> None:
    tokenizer = BPETokenizer.train(TEXT, 300)
    assert 256 < tokenizer.vocab_size <= 300  # this small text runs out of pairs to merge
    for text in ("the cat", "never seen: ∂ 🐉 \x00", TEXT[:200]):
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert sum(tokenizer.byte_lengths()[i] for i in ids) == len(text.encode("utf-8"))
    assert len(tokenizer.encode(TEXT)) < len(TEXT.encode("utf-8")) / 2  # merges took hold
    stream = tokenizer.stream_decoder()
    assert (
        "".join(stream.decode([i]) for i in tokenizer.encode("ünïcödé 🐉")) + stream.flush()
        == "ünïcödé 🐉"
    )
    again = tokenizer_from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    assert isinstance(again, BPETokenizer) and again.encode(TEXT) == tokenizer.encode(TEXT)
    with pytest.raises(TokenizerError, match="at least 257"):
        BPETokenizer.train(TEXT, 256)


def test_bpe_is_trained_on_the_training_split_only(tmp_path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text(
        TEXT + "zyzzyva " * 200
    )  # the held-out tail repeats a word never seen in training
    corpus, tokenizer = load_corpus(str(path), "bpe", val_fraction=0.5, vocab_size=320)
    text = path.read_text()
    cut = int(len(text) * 0.5)
    assert tokenizer.to_dict() == BPETokenizer.train(text[:cut], 320).to_dict()
    assert cut < len(TEXT)
    assert not any("zy" in tokenizer.decode([i]) for i in range(tokenizer.vocab_size))
    assert tokenizer.decode(corpus.train.tolist()) == text[:cut]
    assert tokenizer.decode(corpus.val.tolist()) == text[cut:]


def test_bits_per_byte_count_the_bytes_each_token_stands_for() -> None:
    tokenizer = BPETokenizer.train(TEXT, 300)
    targets = torch.tensor([tokenizer.encode(TEXT[:300])])
    totals = _Totals(tokenizer)
    totals.add(torch.zeros(*targets.shape, tokenizer.vocab_size), targets)
    result = totals.result()
    assert totals.bytes == len(TEXT[:300].encode("utf-8"))
    assert result.bits_per_byte == pytest.approx(
        np.log2(tokenizer.vocab_size) * targets.numel() / totals.bytes
    )


def test_train_config_needs_a_vocab_size_with_bpe_only() -> None:
    with pytest.raises(ConfigError, match="vocabulary size"):
        TrainConfig(tokenizer="bpe")
    with pytest.raises(ConfigError, match="vocabulary size"):
        TrainConfig(tokenizer="byte", tokenizer_vocab_size=300)
    assert TrainConfig(tokenizer="bpe", tokenizer_vocab_size=300).tokenizer_vocab_size == 300


def test_bpe_through_every_command(tmp_path, capsys) -> None:
    from transformers import AutoTokenizer, pipeline

    run, out = tmp_path / "run", tmp_path / "hf"
    for args in (
        [
            "train",
            *TINY_FLAGS,
            "--steps",
            "2",
            "--tokenizer",
            "bpe",
            "--vocab-size",
            "320",
            "--out",
            str(run),
        ],
        ["generate", str(run), "--prompt", "ROMEO:", "-n", "8", "--seed", "1"],
        ["eval", str(run), "--max-tokens", "256"],
        ["export", "--format", "hf", str(run), "--out", str(out)],
    ):
        try:
            main(args)
        except SystemExit:
            raise AssertionError(f"{args[0]} failed: {capsys.readouterr().err}") from None
    captured = capsys.readouterr().out
    assert "ROMEO:" in captured and "bits" in captured.lower()
    model, tokenizer = load_checkpoint(run)
    assert isinstance(tokenizer, BPETokenizer) and model.config.vocab_size == 320
    # The run directory's tokenizer.json is the tokenizers library's own file.
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert hf_tok("ROMEO: wherefore")["input_ids"] == tokenizer.encode("ROMEO: wherefore")
    text = pipeline("text-generation", model=str(out))("ROMEO:", max_new_tokens=5, do_sample=False)
    assert text[0]["generated_text"].startswith("ROMEO:")
