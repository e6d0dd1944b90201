"""The training loop: `train(cfg) -> run_dir`.

Each optimizer step draws a global batch of `batch_size` random windows from a generator
seeded by (seed, step); rank r of K takes rows [r*B/K, (r+1)*B/K) and splits them into
micro-batches. The batch therefore depends only on the step, which makes resuming exact
and lets a run continue on a different number of ranks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bdh.device import resolve_device
from bdh.errors import BDHError, ConfigError
from bdh.train.config import TrainConfig, check_resume_compatible
from bdh.train.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    dist_info_from_env,
    init_distributed,
    shutdown_distributed,
    wrap_model,
)
from bdh.train.metrics import ActivityProbe, MetricsWriter, state_norm
from bdh.train.optim import build_optimizer, load_optimizer_tensors, optimizer_tensors
from bdh.train.schedule import lr_at
from bdh.train.state import (
    METRICS_FILE,
    TrainingSnapshot,
    capture_rng,
    latest_checkpoint,
    load_training_checkpoint,
    prepare_run_dir,
    read_train_config,
    restore_rng,
    save_training_checkpoint,
    truncate_metrics,
    write_train_config,
)

MetricsCallback = Callable[[dict[str, Any]], None]


class TrainingDiverged(BDHError):
    """The loss or gradient became NaN/inf; the run stopped without saving the bad state."""


class TrainingInterrupted(BDHError):
    """SIGINT/SIGTERM arrived; a checkpoint was written and the run can be resumed."""

    def __init__(self, message: str, run_dir: Path, step: int):
        super().__init__(message)
        self.run_dir = run_dir
        self.step = step


def rank_device(name: str, info: DistInfo) -> torch.device:
    """The device of this rank: one GPU per rank under DDP."""
    device = resolve_device(name)
    if device.type == "cuda":
        if info.enabled:
            device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return device


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# Families for which bf16 autocast pays off on CPU. The neuro model trains under bf16 too
# (its rho state stays fp32), but its matrices are too small to gain: 150 steps of
# `neuro tiny` took 17.8 s against 16.3 s in fp32, at the same validation loss.
CPU_BF16_MODELS = frozenset({"bdh", "gpt"})


def resolve_precision(precision: str, device: torch.device, model: str = "bdh") -> str:
    """auto: bf16 autocast on CUDA cards and CPUs with native bf16, fp32 elsewhere.

    On CPU, bf16 autocast reached the same validation loss as fp32 in about half the time
    (docs/training.md); weights, optimizer state, loss and evaluation stay fp32.
    """
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise ConfigError("fp16 training needs CUDA (use bf16 or fp32 on CPU)")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and model in CPU_BF16_MODELS and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def resume_config(run_dir: str | Path, changes: dict[str, Any] | None = None) -> TrainConfig:
    """The saved config of a run, with the allowed `changes` (e.g. more steps) applied."""
    run_dir = Path(run_dir)
    saved = TrainConfig.from_dict(read_train_config(run_dir))
    changes = {k: v for k, v in (changes or {}).items() if k != "out_dir"}
    check_resume_compatible(saved, changes, run_dir)
    return saved.replace(**changes, out_dir=str(run_dir))


class _StopSignals:
    """SIGINT/SIGTERM set a flag (the loop saves and stops); a second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _model_overrides(cfg: TrainConfig, vocab_size: int) -> dict[str, Any]:
    from bdh.registry import model_class

    overrides = dict(cfg.model_overrides)
    config_fields = {f.name for f in dataclasses.fields(model_class(cfg.model).config_class)}
    if "vocab_size" in config_fields:
        given = overrides.setdefault("vocab_size", vocab_size)
        if given != vocab_size:
            raise ConfigError(f"model vocab_size {given} does not match the tokenizer's {vocab_size}")
    return overrides


def batch_starts(seed: int, step: int, batch_size: int, n_tokens: int, block_size: int) -> list[int]:
    """Window starts of the global batch of `step`: a pure function of (seed, step)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(n_tokens - block_size - 1, (batch_size,), generator=generator).tolist()


def train(
    cfg: TrainConfig,
    on_metrics: MetricsCallback | None = None,
    *,
    resume: bool = False,
    force: bool = False,
) -> Path:
    """Train as `cfg` says and return the run directory (a loadable checkpoint at the end).

    resume: continue the run in `cfg.out_dir` from its latest checkpoint (build `cfg` with
    `resume_config`). force: clear an existing run directory first. Raises
    `TrainingInterrupted` after saving on SIGINT/SIGTERM and `TrainingDiverged` on NaN/inf.
    """
    info = dist_info_from_env()
    device = rank_device(cfg.device, info)
    init_distributed(info, device)
    try:
        run_dir = _Trainer(cfg, info, device, on_metrics, resume, force).run()
        # Every rank finishes its last collective before any rank tears the group down;
        # a gloo rank whose peer has already left can abort in its destructor.
        barrier(info)
        return run_dir
    finally:
        shutdown_distributed(info)


class _Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        info: DistInfo,
        device: torch.device,
        on_metrics: MetricsCallback | None,
        resume: bool,
        force: bool,
    ):
        from bdh.data import load_corpus
        from bdh.registry import build_model_from_preset

        self.cfg, self.info, self.device, self.on_metrics = cfg, info, device, on_metrics
        self.run_dir = Path(cfg.out_dir)
        if cfg.batch_size % info.world_size:
            raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by {info.world_size} ranks")
        self.rows_per_rank = cfg.batch_size // info.world_size
        self.micro = cfg.micro_batch_size or self.rows_per_rank
        if self.rows_per_rank % self.micro:
            raise ConfigError(
                f"micro_batch_size {self.micro} does not divide the {self.rows_per_rank} rows per rank"
            )
        self.accum = self.rows_per_rank // self.micro
        self.precision = resolve_precision(cfg.precision, device, cfg.model)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        self.corpus, self.tokenizer = load_corpus(cfg.data, cfg.tokenizer, cfg.val_fraction)
        self.corpus.check_block_size(cfg.block_size)
        torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts)
        self.model = build_model_from_preset(
            cfg.model, cfg.preset, **_model_overrides(cfg, self.tokenizer.vocab_size)
        ).to(device)
        self.model.train()
        self.optimizer = build_optimizer(
            self.model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device
        )
        self.rule = self._make_rule()
        # Only now, with options, data and model checked, touch the run directory. Every
        # rank checks (and fails) alike; only rank 0 clears a forced directory.
        prepare_run_dir(self.run_dir, resume, force, clear=info.is_main)
        barrier(info)
        self.step, self.tokens_seen, self.train_time = 0, 0, 0.0
        if resume:
            self._resume()
        else:
            # Dropout differs per rank; the data split does not depend on this seed.
            torch.manual_seed(cfg.seed + 7919 * info.rank)
            if info.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
        if info.is_main:
            write_train_config(self.run_dir, cfg.to_dict())
        if cfg.compile:  # in place, so a model can choose what to compile (neuro: its cell)
            self.model.compile()
        self.ddp_model = wrap_model(self.model, info, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.probe = ActivityProbe(self.model)

    # ---- setup ---------------------------------------------------------------------

    def _make_rule(self) -> Any:
        cfg = self.cfg
        if cfg.learning_mode == "backprop" and not cfg.prune_every and not cfg.homeostatic_scaling:
            return None
        from bdh.learning import make_learning_rule  # only when a rule is requested

        rule = make_learning_rule(
            cfg.learning_mode, cfg.hebbian_lr, cfg.prune_every, cfg.prune_threshold, cfg.homeostatic_scaling
        )
        if rule is not None:
            rule.attach(self.model)
        return rule

    def _resume(self) -> None:
        path = latest_checkpoint(self.run_dir)
        snap = load_training_checkpoint(path, self.model)
        load_optimizer_tensors(self.optimizer, snap.optimizer_tensors, snap.optimizer_groups, str(path))
        if self.rule is not None:
            if snap.rule_state is None:
                raise ConfigError(f"checkpoint {path} has no learning-rule state to resume from")
            self.rule.load_state_dict(snap.rule_state)
        self.step, self.tokens_seen, self.train_time = snap.step, snap.tokens_seen, snap.train_time_s
        if snap.world_size == self.info.world_size:
            restore_rng(snap.rng, self.device)
            if self.info.rank:  # the saved generator is rank 0's; other ranks derive theirs
                torch.manual_seed(self.cfg.seed + 7919 * self.info.rank + self.step)
        else:
            torch.manual_seed(self.cfg.seed + 7919 * self.info.rank + self.step)
        if self.info.is_main:
            truncate_metrics(self.run_dir, self.step)

    # ---- one step ------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _train_step(self, measure: bool) -> Tensor:
        """Forward/backward over this rank's micro-batches; returns this rank's mean loss."""
        cfg = self.cfg
        starts = batch_starts(cfg.seed, self.step, cfg.batch_size, len(self.corpus.train), cfg.block_size)
        mine = starts[self.info.rank * self.rows_per_rank : (self.info.rank + 1) * self.rows_per_rank]
        backprop = self.rule is None or self.rule.uses_backprop
        loss_sum = torch.zeros((), device=self.device)
        self.probe.active = measure
        for i in range(self.accum):
            x, y = self.corpus.windows(
                self.corpus.train, mine[i * self.micro : (i + 1) * self.micro], cfg.block_size, self.device
            )
            last = i == self.accum - 1
            sync = contextlib.nullcontext()
            if self.info.enabled and not last and backprop:
                sync = self.ddp_model.no_sync()  # all-reduce gradients once, on the last micro-batch
            grad_mode = contextlib.nullcontext() if backprop else torch.no_grad()
            with sync, grad_mode, self._autocast():
                _, loss = self.ddp_model(x, y)
                loss = loss / self.accum
            if backprop:
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_sum += loss.detach().float()
        self.probe.active = False
        return loss_sum

    def _optimizer_step(self, lr: float) -> float | None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm).item()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the step itself when fp16 overflowed
            self.scaler.update()
        elif not math.isfinite(grad_norm):
            raise self._diverged(f"gradient norm became {grad_norm}")
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _diverged(self, what: str) -> TrainingDiverged:
        last = latest_checkpoint(self.run_dir)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
        return TrainingDiverged(
            f"{what} at step {self.step + 1}; training stopped and nothing was saved from this step; "
            f"{kept} (lower --lr or raise --warmup-steps, then --resume or start over)"
        )

    # ---- the loop ------------------------------------------------------------------

    def run(self) -> Path:
        cfg, info = self.cfg, self.info
        writer = None
        if info.is_main:
            tb = self.run_dir / "tensorboard" if cfg.tensorboard else None
            writer = MetricsWriter(self.run_dir / METRICS_FILE, tb)
        bar = self._progress_bar()
        window = {"loss": 0.0, "steps": 0, "time": 0.0, "tokens": 0}
        tokens_per_step = cfg.batch_size * cfg.block_size
        try:
            with _StopSignals() as signals:
                while self.step < cfg.steps:
                    measure = (self.step + 1) % cfg.log_every == 0
                    t0 = time.perf_counter()
                    loss_sum = self._train_step(measure)
                    # One all-reduce carries the loss, NaN flags, stop requests and rank 0's clock.
                    progress = None
                    if cfg.time_budget_s:
                        progress = (self.train_time + time.perf_counter() - t0) / cfg.time_budget_s
                    packed = torch.tensor(
                        [
                            loss_sum.item(),
                            0.0 if math.isfinite(loss_sum.item()) else 1.0,
                            1.0 if signals.received else 0.0,
                            (progress or 0.0) if info.is_main else 0.0,
                        ],
                        device=self.device,
                    )
                    packed = all_reduce_sum(packed, info).tolist()
                    loss = packed[0] / info.world_size
                    if packed[1] > 0:
                        raise self._diverged(f"the training loss became {loss_sum.item()}")
                    lr = lr_at(
                        self.step, cfg.steps, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.schedule,
                        packed[3] if cfg.time_budget_s else None,
                    )  # fmt: skip
                    backprop = self.rule is None or self.rule.uses_backprop
                    grad_norm = self._optimizer_step(lr) if backprop else None
                    self.step += 1
                    out_of_time = bool(cfg.time_budget_s) and packed[3] >= 1.0
                    last = self.step >= cfg.steps or out_of_time
                    # The rule sees the number of completed steps (prune_every=k: steps k, 2k, ...).
                    rule_metrics = (
                        self.rule.after_step(self.model, self.step, report=measure or last)
                        if self.rule
                        else {}
                    )
                    dt = time.perf_counter() - t0
                    self.train_time += dt
                    self.tokens_seen += tokens_per_step
                    window["loss"] += loss
                    window["steps"] += 1
                    window["time"] += dt
                    window["tokens"] += tokens_per_step
                    if bar is not None:
                        bar.update(1)
                    if measure or last:
                        record = {
                            "step": self.step,
                            "loss": window["loss"] / window["steps"],
                            "lr": lr,
                            "tokens_per_s": window["tokens"] / max(window["time"], 1e-9),
                            "elapsed_s": self.train_time,
                            "tokens": self.tokens_seen,
                        }
                        if grad_norm is not None:
                            record["grad_norm"] = grad_norm
                        record.update(self.probe.collect() if measure else {})
                        record.update({k: float(v) for k, v in rule_metrics.items()})
                        self._emit(writer, record)
                        if bar is not None:
                            bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
                        window = {"loss": 0.0, "steps": 0, "time": 0.0, "tokens": 0}
                    if self.step % cfg.eval_every == 0 or last:
                        self._evaluate(writer, bar)
                    # On one rank a signal is seen at once; with DDP, through the all-reduce.
                    stop_signal = packed[2] > 0 or (not info.enabled and signals.received is not None)
                    if self.step % cfg.checkpoint_every == 0 or last or stop_signal:
                        self._checkpoint()
                    if stop_signal:
                        name = signals.received or "a stop signal on another rank"
                        raise TrainingInterrupted(
                            f"training interrupted by {name} at step {self.step}; checkpoint saved; "
                            f"continue with: bdh train --resume {self.run_dir}",
                            self.run_dir,
                            self.step,
                        )
                    if out_of_time:
                        break
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
            self.probe.remove()
        return self.run_dir

    def _emit(self, writer: MetricsWriter | None, record: dict[str, Any]) -> None:
        if writer is not None:
            writer.write(record)
        if self.on_metrics is not None and self.info.is_main:
            self.on_metrics(record)

    def _evaluate(self, writer: MetricsWriter | None, bar: Any) -> None:
        """Rank 0 evaluates a fixed val sample (the first eval_tokens of val); the others wait."""
        if self.info.is_main:
            from bdh.evaluation import evaluate

            cfg = self.cfg
            result = evaluate(
                self.model, self.corpus.val, self.tokenizer, cfg.block_size,
                batch_size=self.micro, max_tokens=cfg.eval_tokens,
            )  # fmt: skip
            record = {"step": self.step, "val_loss": result.loss, "val_bpb": result.bits_per_byte}
            x, _ = self.corpus.windows(self.corpus.val, [0], cfg.block_size, self.device)
            norm = state_norm(self.model, x)
            if norm is not None:
                record["state_norm"] = norm
            self._emit(writer, record)
            if bar is not None:
                bar.set_postfix(val=f"{result.loss:.3f}", refresh=False)
        barrier(self.info)

    def _checkpoint(self) -> None:
        if self.info.is_main:
            tensors, groups = optimizer_tensors(self.optimizer)
            snapshot = TrainingSnapshot(
                step=self.step,
                tokens_seen=self.tokens_seen,
                train_time_s=self.train_time,
                optimizer_tensors=tensors,
                optimizer_groups=groups,
                rng=capture_rng(self.device),
                rule_state=self.rule.state_dict() if self.rule is not None else None,
                world_size=self.info.world_size,
            )
            save_training_checkpoint(self.run_dir, self.model, self.tokenizer, snapshot, self.cfg.keep_last)
        barrier(self.info)

    def _progress_bar(self) -> Any:
        if not (self.cfg.progress and self.info.is_main):
            return None
        from tqdm import tqdm

        return tqdm(
            total=self.cfg.steps, initial=self.step, desc="train", unit="step",
            file=sys.stderr, dynamic_ncols=True, leave=True,
        )  # fmt: skip
