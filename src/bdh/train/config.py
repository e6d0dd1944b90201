"""`TrainConfig`: every training option, from code, the command line or a TOML/JSON/YAML file.

Precedence: dataclass defaults < config file < explicit command-line values. The fully
resolved config is saved as `train_config.json` in the run directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bdh.config import ConfigDict
from bdh.errors import ConfigError
from bdh.precision import PRECISIONS
from bdh.tokenizers import MIN_BPE_VOCAB, TOKENIZER_KINDS

SCHEDULES = ("cosine", "constant")
LEARNING_MODES = ("backprop", "hebbian", "hybrid")

# Options that may differ when a run is resumed; all others define the run and must match.
RESUMABLE_CHANGES = frozenset(
    {
        "steps", "time_budget_s", "eval_every", "eval_tokens", "log_every", "checkpoint_every",
        "keep_last", "device", "compile", "progress", "tensorboard", "out_dir", "precision",
    }
)  # fmt: skip


@dataclass
class TrainConfig(ConfigDict):
    _unknown_label = "training option(s)"
    """One training run. `batch_size` is the global batch (all ranks, all micro-steps)."""

    # model and data
    model: str = "bdh"
    preset: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    # Start from this checkpoint's weights and model config (fine-tuning); preset and
    # model_overrides are then unused. None = a fresh model of `preset`.
    init_from: str | None = None
    data: str | None = None  # corpus path/name; None = bundled tiny Shakespeare
    tokenizer: str = "byte"
    tokenizer_vocab_size: int | None = None  # the bpe tokenizer's vocabulary (needed for it)
    val_fraction: float = 0.1
    # optimisation
    steps: int = 300
    batch_size: int = 32
    micro_batch_size: int | None = None  # rows per forward on one rank; None = batch / ranks
    block_size: int = 64
    lr: float = 6e-3
    min_lr: float = 6e-4
    schedule: str = "cosine"
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    time_budget_s: float | None = None  # stop after this much training time (eval excluded)
    seed: int = 1337
    # carried state (truncated BPTT across steps, bdh.train.carry)
    carry_state: bool = False  # rows read contiguous streams; the state goes on between steps
    reset_tokens: int | None = None  # stream length before a restart; None = whole stripes
    # precision and speed
    device: str = "auto"  # auto = cuda when available, else cpu
    precision: str = "auto"  # auto = bf16 on CUDA / CPUs with native bf16, else fp32
    compile: bool = False
    # evaluation, logging, checkpoints
    out_dir: str = "runs/bdh"
    eval_every: int = 100
    eval_tokens: int = 16384  # fixed val sample: this many tokens from the start of val
    log_every: int = 10
    checkpoint_every: int = 500
    keep_last: int = 3
    progress: bool = True
    tensorboard: bool = False
    # learning rules (bdh.learning)
    learning_mode: str = "backprop"
    hebbian_lr: float = 1e-3  # Oja's rate (modes hebbian and hybrid)
    readout_lr: float = 1.0  # the readout's delta rule (mode hebbian; bdh.learning)
    predictive_lr: float = 2.0  # the predictive rule (mode hebbian; bdh.learning)
    prune_every: int = 0
    prune_threshold: float = 0.0
    homeostatic_scaling: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        self.require_positive_ints(
            "steps", "batch_size", "block_size", "eval_every", "log_every", "checkpoint_every",
            "keep_last", "eval_tokens",
        )  # fmt: skip
        if self.micro_batch_size is not None and (
            not isinstance(self.micro_batch_size, int) or self.micro_batch_size < 1
        ):
            raise ConfigError(f"micro_batch_size must be a positive integer, got {self.micro_batch_size!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.learning_mode not in LEARNING_MODES:
            raise ConfigError(
                f"learning_mode must be one of {', '.join(LEARNING_MODES)}, got {self.learning_mode!r}"
            )
        if self.tokenizer not in TOKENIZER_KINDS:
            raise ConfigError(f"tokenizer must be one of {', '.join(TOKENIZER_KINDS)}, got {self.tokenizer!r}")
        if (self.tokenizer == "bpe") != (self.tokenizer_vocab_size is not None):
            raise ConfigError("a vocabulary size goes with the bpe tokenizer, and only with it")
        vocab = self.tokenizer_vocab_size
        if vocab is not None and (not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < MIN_BPE_VOCAB):
            raise ConfigError(f"the bpe vocabulary size must be an integer >= {MIN_BPE_VOCAB}, got {vocab!r}")
        if not self.lr > 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ConfigError(f"need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("warmup_steps, weight_decay and grad_clip must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"betas must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ConfigError(f"time_budget_s must be > 0, got {self.time_budget_s}")
        if not isinstance(self.carry_state, bool):
            raise ConfigError(f"carry_state must be true or false, got {self.carry_state!r}")
        if self.reset_tokens is not None:
            if not self.carry_state:
                raise ConfigError("reset_tokens needs carry_state (--reset-tokens needs --carry-state)")
            self.require_positive_ints("reset_tokens")
        if not isinstance(self.model_overrides, dict):
            raise ConfigError("model_overrides must be a mapping of model config fields")
        if self.init_from is not None and self.model_overrides:
            raise ConfigError("init_from takes the checkpoint's model config; drop model_overrides (--set)")

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a .toml, .json or .yaml/.yml file (a flat mapping; `model_overrides` a table)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no config file at '{path}'")
    suffix = path.suffix.lower()
    text = path.read_text()
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ModuleNotFoundError:
                raise ConfigError("YAML config files need pyyaml (pip install pyyaml); use TOML or JSON") from None
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"config file '{path}' must end in .toml, .json, .yaml or .yml")
    except ConfigError:
        raise
    except Exception as err:  # each parser has its own error class
        raise ConfigError(f"cannot parse config file '{path}': {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of options")
    # Accept dashes as in CLI flags: batch-size = 32.
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def check_resume_compatible(saved: TrainConfig, requested: dict[str, Any], run_dir: Path) -> None:
    """Refuse options that would change what the saved run is (model, data, batch, optimiser)."""
    for name, value in requested.items():
        if name in RESUMABLE_CHANGES:
            continue
        if getattr(saved, name) != value:
            raise ConfigError(
                f"run '{run_dir}' was trained with {name}={getattr(saved, name)!r}; "
                f"cannot resume it with {name}={value!r} (start a new run instead)"
            )
