"""Checkpoints, tokenizers, pipeline and Trainer: bdh and transformers read each other's files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import bdh
from bdh.checkpoint import load_checkpoint
from bdh.cli import main
from bdh.data import load_corpus
from bdh.generate import SamplingConfig, generate_ids
from bdh.tokenizers import ByteTokenizer, CharTokenizer, tokenizer_from_dict
from tests.train.conftest import TINY_FLAGS

PROMPT = list(b"ROMEO:")


def test_save_pretrained_round_trip_and_bdh_loads_it(pair, tmp_path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from bdh.hf import BDHForCausalLM, hf_tokenizer

    model, hf = pair
    hf.save_pretrained(tmp_path)
    hf_tokenizer(ByteTokenizer()).save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["model.safetensors"]
    assert not list(tmp_path.glob("*.bin"))
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(again, BDHForCausalLM) and isinstance(
        AutoConfig.from_pretrained(tmp_path).bdh_config(), bdh.BDHConfig
    )
    ours, tokenizer = load_checkpoint(tmp_path)
    assert isinstance(tokenizer, ByteTokenizer)
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.bdh.state_dict()[name], tensor)
        assert torch.equal(ours.state_dict()[name], tensor)
    with pytest.raises(ValueError, match="safetensors"):
        hf.save_pretrained(tmp_path / "pickled", safe_serialization=False)


def test_a_bdh_train_run_dir_loads_and_exports(tmp_path, capsys) -> None:
    from transformers import AutoModelForCausalLM, pipeline

    run = tmp_path / "run"
    with _no_exit():
        main(["train", *TINY_FLAGS, "--steps", "2", "--out", str(run)])
    model, _ = load_checkpoint(run)
    hf = AutoModelForCausalLM.from_pretrained(run)  # the run directory as it is
    idx = torch.randint(0, 256, (2, 13))
    with torch.no_grad():
        assert torch.equal(hf(idx, use_cache=False).logits, model(idx)[0])
    out = tmp_path / "hf"
    with _no_exit():
        main(["export", "--format", "hf", str(run), "--out", str(out)])
    assert "wrote" in capsys.readouterr().out
    generator = pipeline("text-generation", model=str(out))
    text = generator("ROMEO:", max_new_tokens=12, do_sample=False)[0]["generated_text"]
    want = generate_ids(model, [list(b"ROMEO:")], 12, SamplingConfig(greedy=True))[0].tolist()
    assert text == "ROMEO:" + bytes(want).decode("utf-8", errors="replace")
    # Exporting again into a non-empty directory needs --force.
    with pytest.raises(SystemExit) as done:
        main(["export", "--format", "hf", str(run), "--out", str(out)])
    assert done.value.code == 1 and "--force" in capsys.readouterr().err


class _no_exit:
    """Run a CLI call that must succeed (main exits only on errors)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, tb) -> bool:
        if kind is SystemExit:
            raise AssertionError(f"command failed with exit code {value.code}")
        return False


@pytest.mark.parametrize(
    "tokenizer", [ByteTokenizer(), CharTokenizer("\n !',.:;?ABCDEFabcdef")], ids=["byte", "char"]
)
def test_tokenizers_encode_decode_as_ours_and_reload(tokenizer, tmp_path) -> None:
    from transformers import AutoTokenizer

    from bdh.hf import hf_tokenizer

    text = (
        "Bad face, cafe: be. fed!\nA\x00B"
        if tokenizer.kind == "byte"
        else "Bad face, cafe: be. fed!\nA"
    )
    hf_tokenizer(tokenizer).save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    ids = loaded(text)["input_ids"]
    assert ids == tokenizer.encode(text)
    assert loaded.decode(ids) == text
    assert loaded.eos_token_id is None and loaded.bos_token_id is None
    again = tokenizer_from_dict(json.loads((tmp_path / "tokenizer.json").read_text()))
    assert type(again) is type(tokenizer) and again.to_dict() == tokenizer.to_dict()


def test_no_default_eos_ends_generation_at_byte_zero(pair) -> None:
    model, hf = pair
    assert hf.generation_config.eos_token_id is None and hf.config.eos_token_id is None
    # Swap lm_head's column 0 with the first greedy token's: the model now emits byte 0 first.
    first = generate_ids(model, [PROMPT], 1, SamplingConfig(greedy=True))[0, 0].item()
    with torch.no_grad():
        model.lm_head[:, [0, first]] = model.lm_head[:, [first, 0]]
    want = generate_ids(model, [PROMPT], 12, SamplingConfig(greedy=True))[0].tolist()
    out = hf.generate(torch.tensor([PROMPT]), max_new_tokens=12, do_sample=False)
    assert want[0] == 0 and out[0, len(PROMPT) :].tolist() == want


def test_trainer_lowers_the_loss(tmp_path) -> None:
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    from bdh.hf import BDHForCausalLM, BDHHFConfig, CorpusWindows, hf_tokenizer

    corpus, _ = load_corpus()
    train = CorpusWindows(corpus.train[:40_000], block_size=32)
    held_out = CorpusWindows(corpus.val[:4096], block_size=32)
    torch.manual_seed(0)
    model = BDHForCausalLM(
        BDHHFConfig(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=8, dropout=0.0)
    )
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=40, per_device_train_batch_size=16, per_device_eval_batch_size=16,
        learning_rate=3e-3, warmup_steps=0, logging_steps=10, save_strategy="no", report_to=[],
        use_cpu=True, dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=held_out)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < before - 0.5, (before, after)
    trainer.save_model(str(tmp_path / "saved"))  # bdh reads what Trainer writes
    hf_tokenizer(ByteTokenizer()).save_pretrained(tmp_path / "saved")
    saved, _ = load_checkpoint(tmp_path / "saved")
    assert torch.equal(saved.encoder, model.bdh.encoder.detach().cpu())
    with pytest.raises(ValueError, match="checkpointing"):
        Trainer(
            model=model,
            args=TrainingArguments(
                output_dir=str(tmp_path), gradient_checkpointing=True, use_cpu=True, report_to=[]
            ),
        ).train()


def test_the_core_package_never_imports_transformers() -> None:
    code = (
        "import sys\n"
        "import bdh, bdh.model, bdh.checkpoint, bdh.generate, bdh.tokenizers\n"
        "from bdh.cli import register_commands\n"
        "register_commands()\n"
        "bdh.BDH, bdh.load_checkpoint\n"
        "loaded = [m for m in ('transformers', 'tokenizers', 'accelerate') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
