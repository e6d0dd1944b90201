"""The model an analysis experiment reads: a given checkpoint, or one trained for it.

Experiments that probe a trained BDH (sparsity on repetition, synapse readout) share this:
with `--checkpoint` they load that run or checkpoint directory; without it they train a
small model on the bundled corpus with `bdh.train` into OUT/runs/model and read that.
Either way the report records where the model came from and its validation loss.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from bdh.errors import ConfigError
from bdh.tokenizers import Tokenizer


@dataclass
class ModelRecipe:
    """How the experiment's own model is trained when no checkpoint is given."""

    preset: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    steps: int = 600
    batch_size: int = 16
    block_size: int = 256
    lr: float = 6e-3
    seed: int = 1337
    data: str | None = None
    precision: str = "auto"
    eval_tokens: int = 16384

    def train_config(self, out_dir: Path) -> Any:
        from bdh.train import TrainConfig

        return TrainConfig(
            preset=self.preset, model_overrides=dict(self.model_overrides), data=self.data, steps=self.steps, batch_size=self.batch_size,
            block_size=self.block_size, lr=self.lr, min_lr=self.lr / 10, seed=self.seed,
            precision=self.precision, device="cpu", eval_every=max(1, self.steps // 4),
            eval_tokens=self.eval_tokens, log_every=max(1, min(10, self.steps // 10)),
            checkpoint_every=self.steps, keep_last=1, progress=False, out_dir=str(out_dir),
        )  # fmt: skip


# The `--smoke` configurations' model: a few seconds of training, to test a pipeline.
SMOKE_RECIPE = ModelRecipe(
    model_overrides={"n_layer": 3, "mlp_internal_dim_multiplier": 4},
    steps=2, batch_size=2, block_size=32, eval_tokens=64,
)  # fmt: skip


def run_metrics(checkpoint: Path) -> dict[str, float | None]:
    """From the metrics of the run `checkpoint` belongs to (the run directory itself, or a
    checkpoint inside its `checkpoints/`): the last validation loss and the training
    seconds logged last; None where not found."""
    from bdh.train.metrics import read_metrics

    for run in (checkpoint, checkpoint.parent.parent):
        path = run / "metrics.jsonl"
        if path.is_file():
            rows = read_metrics(path)
            vals = [r["val_loss"] for r in rows if "val_loss" in r]
            elapsed = [r["elapsed_s"] for r in rows if "elapsed_s" in r]
            return {
                "final_val_loss": vals[-1] if vals else None,
                "logged_train_seconds": elapsed[-1] if elapsed else None,
            }
    return {"final_val_loss": None, "logged_train_seconds": None}


def experiment_model(
    checkpoint: str | Path | None, recipe: ModelRecipe, run_dir: Path
) -> tuple[nn.Module, Tokenizer, dict[str, Any]]:
    """Load `checkpoint`, or train `recipe` into `run_dir` first; returns the model (eval
    mode, CPU), its tokenizer and a record of its provenance for the report."""
    from bdh.analysis.capture import require_bdh_analyses
    from bdh.checkpoint import load_checkpoint, read_checkpoint_config

    record: dict[str, Any] = {}
    if checkpoint is None:
        from bdh.train import train

        t0 = time.perf_counter()
        cfg = recipe.train_config(run_dir)
        path = train(cfg)
        record.update(
            trained_here=True,
            recipe=asdict(recipe),
            train_seconds=time.perf_counter() - t0,
            tokens_trained=cfg.steps * cfg.batch_size * cfg.block_size,
        )
    else:
        path = Path(checkpoint)
        if not (path / "config.json").is_file():
            raise ConfigError(f"--checkpoint '{path}' is not a run or checkpoint directory")
        record["trained_here"] = False
        train_config = path / "train_config.json"
        if train_config.is_file():
            import json

            saved = json.loads(train_config.read_text())
            record["train_config"] = saved
            # Whether it is the model this command would have trained without --checkpoint.
            own = recipe.train_config(Path(saved.get("out_dir", ""))).to_dict()
            record["is_default_recipe"] = own == saved
    model, tokenizer = load_checkpoint(path)
    require_bdh_analyses(model, "the experiment's checkpoint")
    config = read_checkpoint_config(path)
    record.update(
        checkpoint=str(path),
        model_type=config["model_type"],
        model_config=config["config"],
        parameters=sum(p.numel() for p in model.parameters()),
        **run_metrics(path),
    )
    return model, tokenizer, record


def untrained_twin(record: dict[str, Any], seed: int) -> nn.Module:
    """A randomly initialised model of the recorded shape (eval mode): the control that
    tells what an analysis reads before any learning."""
    import torch

    from bdh.registry import build_model

    torch.manual_seed(seed)
    return build_model(record["model_type"], record["model_config"]).eval()


def describe_model(record: dict[str, Any]) -> str:
    """One Markdown paragraph: which model, how it was trained, its validation loss."""
    c = record["model_config"]
    val = record["final_val_loss"]
    shape = (
        f"{c.get('n_layer')} layers, d = {c.get('n_embd')}, {c.get('n_head')} heads, "
        f"{record['parameters']:,} parameters"
    )
    if record["trained_here"]:
        r = record["recipe"]
        origin = (
            f"trained for this report with `bdh.train`: preset `{r['preset']}`, {r['steps']} steps "
            f"of {r['batch_size']} x {r['block_size']} tokens ({record['tokens_trained']:,} tokens) "
            f"on {r['data'] or 'the bundled tiny Shakespeare'}, seed {r['seed']}, lr {r['lr']}, "
            f"{record['train_seconds']:.0f} s"
        )
    else:
        t = record.get("train_config") or {}
        origin = f"checkpoint `{record['checkpoint']}`"
        if t:
            origin += (
                f" (preset `{t.get('preset')}`, {t.get('steps')} steps of {t.get('batch_size')} x "
                f"{t.get('block_size')} tokens on {t.get('data') or 'the bundled tiny Shakespeare'}, "
                f"seed {t.get('seed')}, lr {t.get('lr')}"
                + (
                    "; the recipe this command trains without --checkpoint"
                    if record.get("is_default_recipe")
                    else ""
                )
                + ")"
            )
        if record.get("logged_train_seconds") is not None:
            origin += f", its training log ending at {record['logged_train_seconds']:.0f} s"
    loss = "not recorded" if val is None else f"{val:.3f} nats/token"
    return f"Model: {shape}; {origin}. Validation loss {loss}."
