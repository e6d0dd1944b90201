"""`bdh train` and `bdh plot`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from bdh.cli.group import app

# CLI flag -> TrainConfig field; every flag defaults to None so that only values the user
# typed override the config file (and, with --resume, the saved run config).
_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--model", "model", click.Choice(["bdh", "neuro", "gpt"]), "Model family [bdh]."),
    ("--preset", "preset", str, "Model preset of that family [tiny]."),
    ("--init-from", "init_from", str, "Start from this checkpoint's weights and model config (fine-tuning) [a fresh --preset model]."),
    ("--data", "data", str, "Corpus file, directory or name [bundled tiny Shakespeare]."),
    ("--tokenizer", "tokenizer", click.Choice(["byte", "char", "bpe"]), "Tokenizer [byte]; bpe: a byte-level BPE trained on the training split (needs --vocab-size and bdh[hf])."),
    ("--vocab-size", "tokenizer_vocab_size", click.IntRange(min=257), "Vocabulary of the bpe tokenizer (256 bytes + merges)."),
    ("--steps", "steps", click.IntRange(min=1), "Optimizer steps [300]."),
    ("--batch-size", "batch_size", click.IntRange(min=1), "Global batch in sequences, all ranks together [32]."),
    ("--micro-batch-size", "micro_batch_size", click.IntRange(min=1), "Sequences per forward on one rank; smaller = gradient accumulation [batch/ranks]."),
    ("--block-size", "block_size", click.IntRange(min=1), "Tokens per training sequence [64]."),
    ("--lr", "lr", click.FloatRange(0, min_open=True), "Peak learning rate [6e-3]."),
    ("--min-lr", "min_lr", click.FloatRange(0), "Final learning rate of the cosine schedule [6e-4]."),
    ("--schedule", "schedule", click.Choice(["cosine", "constant"]), "LR schedule after warmup [cosine]."),
    ("--warmup-steps", "warmup_steps", click.IntRange(min=0), "Linear warmup steps [20]."),
    ("--weight-decay", "weight_decay", click.FloatRange(0), "AdamW decoupled weight decay on matrices [0.1]."),
    ("--beta1", "beta1", click.FloatRange(0, 1, max_open=True), "AdamW beta1 [0.9]."),
    ("--beta2", "beta2", click.FloatRange(0, 1, max_open=True), "AdamW beta2 [0.95]."),
    ("--grad-clip", "grad_clip", click.FloatRange(0), "Clip the global gradient norm; 0 = off [1.0]."),
    ("--time-budget", "time_budget_s", click.FloatRange(0, min_open=True), "Stop after this many seconds of training (eval excluded); the cosine decays over it."),
    ("--seed", "seed", int, "Seed for weights, batches and dropout [1337]."),
    ("--reset-tokens", "reset_tokens", click.IntRange(min=1), "With --carry-state: restart every stream at a new random place after this many tokens (a multiple of --block-size) [each row reads its 1/B stripe of the corpus to the end]."),
    ("--device", "device", str, "auto, cpu, cuda, cuda:1 [auto]."),
    ("--precision", "precision", click.Choice(["auto", "fp32", "bf16", "fp16"]), "Autocast precision; auto = bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32."),
    ("--eval-every", "eval_every", click.IntRange(min=1), "Validate every N steps [100]."),
    ("--eval-tokens", "eval_tokens", click.IntRange(min=1), "Size of the fixed validation sample in tokens [16384]."),
    ("--log-every", "log_every", click.IntRange(min=1), "Log train metrics every N steps [10]."),
    ("--checkpoint-every", "checkpoint_every", click.IntRange(min=1), "Checkpoint every N steps [500]."),
    ("--keep-last", "keep_last", click.IntRange(min=1), "Step checkpoints to keep [3]."),
    ("--learning-mode", "learning_mode", click.Choice(["backprop", "hebbian", "hybrid"]), "Learning rule [backprop]."),
    ("--hebbian-lr", "hebbian_lr", click.FloatRange(0), "Hebbian learning rate [1e-3]."),
    ("--readout-lr", "readout_lr", click.FloatRange(0), "Readout delta-rule rate, hebbian mode [1.0]."),
    ("--predictive-lr", "predictive_lr", click.FloatRange(0), "Predictive-rule rate, hebbian mode [2.0]."),
    ("--prune-every", "prune_every", click.IntRange(min=0), "Prune synapses every N steps; 0 = never [0]."),
    ("--prune-threshold", "prune_threshold", click.FloatRange(0), "Pruning magnitude threshold [0]."),
]


def _train_options(func: Any) -> Any:
    for flag, dest, kind, help_text in reversed(_OPTIONS):
        func = click.option(flag, dest, type=kind, default=None, help=help_text)(func)
    return func


def _parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    from bdh.errors import ConfigError

    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


@app.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None, help="TOML, JSON or YAML file of options (flags override it).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Run directory [runs/bdh].")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), default=None, help="Continue the run in this directory from its last checkpoint.")
@click.option("--force", is_flag=True, help="Start over in an existing run directory (deletes its checkpoints and metrics).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a model config field, e.g. --set n_layer=2 (repeatable).")
@click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile the model [off].")
@click.option("--homeostatic-scaling/--no-homeostatic-scaling", default=None, help="Homeostatic scaling rule [off].")
@click.option("--tensorboard/--no-tensorboard", default=None, help="Also log to RUN_DIR/tensorboard (needs tensorboard).")
@click.option("--progress/--no-progress", default=None, help="Progress bar with ETA on stderr [on].")
@click.option("--carry-state/--no-carry-state", default=None, help="Rows read contiguous streams and each step starts from the state the last one ended with (truncated BPTT) [off].")
@click.option("--damping", default=None, metavar="U|alibi[:c]", help="BDH state damping: one factor in (0, 1], or per-head ALiBi-style factors (docs/long_context.md) [off].")
@click.option("--no-bptt", is_flag=True, default=None, help="BDH: no gradient through the attention's keys, values and state (paper §7.2) [off].")
@_train_options
def train(
    config_file: Path | None, out_dir: Path | None, resume_dir: Path | None, force: bool,
    sets: tuple[str, ...], compile_: bool | None, homeostatic_scaling: bool | None,
    tensorboard: bool | None, progress: bool | None, carry_state: bool | None,
    damping: str | None, no_bptt: bool | None, **flags: Any,
) -> None:  # fmt: skip
    """Train a model; the run directory ends up a checkpoint that `bdh generate` loads.

    Works under `torchrun --nproc_per_node=K -m bdh train ...` (DDP; --batch-size stays global).
    """
    from bdh.errors import ConfigError
    from bdh.train import TrainConfig, TrainingInterrupted, read_config_file, resume_config
    from bdh.train import train as run_training

    options: dict[str, Any] = read_config_file(config_file) if config_file else {}
    options.update({k: v for k, v in flags.items() if v is not None})
    for key, value in (("compile", compile_), ("homeostatic_scaling", homeostatic_scaling),
                       ("tensorboard", tensorboard), ("progress", progress),
                       ("carry_state", carry_state)):  # fmt: skip
        if value is not None:
            options[key] = value
    model_flags = _parse_sets(sets)
    if damping is not None:
        model_flags["damping"] = _parse_sets((f"damping={damping}",))["damping"]
    if no_bptt:
        model_flags["no_bptt"] = True
    if model_flags:
        options["model_overrides"] = {**options.get("model_overrides", {}), **model_flags}
    if resume_dir is not None:
        if force:
            raise ConfigError("--resume and --force contradict each other")
        if out_dir is not None and out_dir != resume_dir:
            raise ConfigError("--resume continues the run in place; drop --out or make it the same directory")
        cfg = resume_config(resume_dir, options)
    else:
        if out_dir is not None:
            options["out_dir"] = str(out_dir)
        cfg = TrainConfig.from_dict(options)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    try:
        run_dir = run_training(cfg, resume=resume_dir is not None, force=force)
    except TrainingInterrupted as stop:
        if main_rank:
            print(str(stop), file=sys.stderr)
        sys.exit(130)
    if main_rank:
        print(f"saved {run_dir} (bdh generate {run_dir} --prompt ...)", file=sys.stderr)


@app.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=None, help="PNG path [RUN_DIR/metrics.png].")
def plot(run_dir: Path, out_path: Path | None) -> None:
    """Draw a run's metric curves (loss, val loss, sparsity of x and y, state norm, gain) to PNG."""
    from bdh.train.plot import plot_run

    print(f"wrote {plot_run(run_dir, out_path)}")
