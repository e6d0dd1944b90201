"""Checkpoints: safetensors + JSON, never unpickled, refused cleanly when broken."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

import bdh
from bdh.checkpoint import load_checkpoint, save_checkpoint
from bdh.checkpoint.official import convert_official_state_dict
from bdh.errors import CheckpointError
from tests.conftest import load_reference


@pytest.fixture()
def saved(tmp_path):
    model = bdh.BDH(bdh.preset("tiny"))
    save_checkpoint(tmp_path / "ck", model, bdh.ByteTokenizer())
    return tmp_path / "ck", model


def test_round_trip(saved) -> None:
    path, model = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    loaded, tok = load_checkpoint(path)
    assert not loaded.training and tok.kind == "byte"
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    assert json.loads((path / "config.json").read_text())["model_type"] == "bdh"


def test_missing_checkpoint(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing")


def test_truncated_weights(saved) -> None:
    path, _ = saved
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_corrupt_config(saved) -> None:
    path, _ = saved
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_weights_from_another_config(saved, tmp_path) -> None:
    path, _ = saved
    other = bdh.BDH(bdh.preset("tiny", n_embd=32))
    save_checkpoint(tmp_path / "other", other, bdh.ByteTokenizer())
    (path / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(path)


def test_convert_official_state_dict(tmp_path) -> None:
    official = load_reference("official_bdh")
    cfg = dict(n_layer=3, n_embd=32, n_head=2, mlp_internal_dim_multiplier=8, dropout=0.0)
    ref = official.BDH(official.BDHConfig(**cfg)).eval()
    torch.save(ref.state_dict(), tmp_path / "sd.pt")
    convert_official_state_dict(tmp_path / "sd.pt", tmp_path / "ck", n_layer=3, dropout=0.0)
    ours, _ = load_checkpoint(tmp_path / "ck")
    assert ours.config.to_dict() == {**cfg, "vocab_size": 256}
    idx = torch.randint(0, 256, (1, 20))
    torch.testing.assert_close(ours(idx)[0], ref(idx)[0])


def test_convert_refuses_pickled_code(tmp_path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"encoder": Payload()}))
    with pytest.raises(CheckpointError, match="weights-only"):
        convert_official_state_dict(tmp_path / "evil.pt", tmp_path / "out")
