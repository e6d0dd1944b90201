"""The training loop: `train(cfg) -> run_dir`.

Each optimizer step draws a global batch of `batch_size` random windows from a generator
seeded by (seed, step); rank r of K takes rows [r*B/K, (r+1)*B/K) and splits them into
micro-batches. The batch therefore depends only on the step, which makes resuming exact
and lets a run continue on a different number of ranks. With `carry_state` the rows read
contiguous streams instead and every micro-batch starts from the state it ended the
previous step with (`bdh.train.carry`); that state is saved in checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bdh.buffers import reuse_cpu_buffers
from bdh.data.streams import StreamSchedule, random_window_starts
from bdh.device import resolve_device
from bdh.errors import BDHError, ConfigError
from bdh.precision import autocast, resolve_precision
from bdh.train.carry import CarriedState
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
    RunLock,
    TrainingSnapshot,
    capture_rng,
    latest_checkpoint,
    load_training_checkpoint,
    prepare_run_dir,
    read_train_config,
    remove_temporaries,
    restore_rng,
    save_training_checkpoint,
    truncate_metrics,
    write_train_config,
)

MetricsCallback = Callable[[dict[str, Any]], None]

# Rank r's torch generator (dropout) is seeded seed + RANK_SEED_STRIDE * r (+ the step when
# resuming); a prime, so seeds of different ranks and runs do not collide. The batch
# generators' seeds are `bdh.data.streams`'.
RANK_SEED_STRIDE = 7919


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


def _initial_model(directory: str, family: str, tokenizer: Any) -> torch.nn.Module:
    """The model of checkpoint `directory` (init_from), which must be of `family` and have
    the run's tokenizer."""
    from bdh.checkpoint import load_checkpoint, read_checkpoint_config

    kind = read_checkpoint_config(directory).get("model_type")
    if kind != family:
        raise ConfigError(f"init_from {directory} holds a {kind} model, not {family} (set --model)")
    model, saved = load_checkpoint(directory)
    if saved.to_dict() != tokenizer.to_dict():
        raise ConfigError(f"init_from {directory} has another tokenizer than the run's")
    return model


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The torch seed of `rank` from `step` on (dropout differs per rank and per resume)."""
    return seed + RANK_SEED_STRIDE * rank + step


@contextlib.contextmanager
def _tf32_matmuls(device: torch.device) -> Iterator[None]:
    """TF32 matmuls and convolutions on CUDA for the duration of a run, then the previous flags."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _buffer_reuse(device: torch.device) -> contextlib.AbstractContextManager[bool]:
    """On CPU the steps reuse freed buffers (bdh.buffers): bitwise the same results without
    faulting every activation's pages in again each step. The cache is freed at the end."""
    return reuse_cpu_buffers() if device.type == "cpu" else contextlib.nullcontext(False)


@dataclasses.dataclass
class _StepStatus:
    """What every rank learns after a step, summed over ranks by one all-reduce."""

    loss_sum: float  # the ranks' losses
    nonfinite: float  # ranks whose loss was NaN/inf
    stop_requests: float  # ranks that received SIGINT/SIGTERM
    progress: float  # rank 0's fraction of the time budget (the other ranks send 0)

    def all_reduced(self, info: DistInfo, device: torch.device) -> _StepStatus:
        values = [getattr(self, f.name) for f in dataclasses.fields(self)]
        return _StepStatus(*all_reduce_sum(torch.tensor(values, device=device), info).tolist())


@dataclasses.dataclass
class _LogWindow:
    """Train metrics summed since the last logged step."""

    loss: float = 0.0
    steps: int = 0
    time: float = 0.0
    tokens: int = 0

    def add(self, loss: float, seconds: float, tokens: int) -> None:
        self.loss += loss
        self.steps += 1
        self.time += seconds
        self.tokens += tokens


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
        with _tf32_matmuls(device):
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

        self.corpus, self.tokenizer = load_corpus(
            cfg.data, cfg.tokenizer, cfg.val_fraction, cfg.tokenizer_vocab_size
        )
        self.corpus.check_block_size(cfg.block_size)
        torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts)
        if cfg.init_from is not None:
            self.model = _initial_model(cfg.init_from, cfg.model, self.tokenizer).to(device)
        else:
            self.model = build_model_from_preset(
                cfg.model, cfg.preset, **_model_overrides(cfg, self.tokenizer.vocab_size)
            ).to(device)
        self.model.train()
        self.carried = self._carried_state()
        self.optimizer = build_optimizer(
            self.model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device
        )
        self.rule = self._make_rule()
        # Only now, with options, data and model checked, touch the run directory. Rank 0
        # locks it against a second trainer (a resume of a missing directory is left to
        # fail below) and clears it when forced; every rank checks (and fails) alike.
        self.lock = None
        if info.is_main and (self.run_dir.is_dir() or not resume):
            self.lock = RunLock(self.run_dir)
        try:
            self._open_run_dir(resume, force)
        except BaseException:
            self.release()
            raise

    def _open_run_dir(self, resume: bool, force: bool) -> None:
        cfg, info = self.cfg, self.info
        if self.lock is not None:
            remove_temporaries(self.run_dir)
        prepare_run_dir(self.run_dir, resume, force, clear=info.is_main)
        barrier(info)
        self.step, self.tokens_seen, self.train_time = 0, 0, 0.0
        if resume:
            self._resume()
        else:
            # Dropout differs per rank; the data split does not depend on this seed.
            torch.manual_seed(rank_seed(cfg.seed, info.rank))
            if info.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
        if info.is_main:
            write_train_config(self.run_dir, cfg.to_dict())
        if cfg.compile:  # in place, so a model can choose what to compile (neuro: its cell)
            self.model.compile()
        self.ddp_model = wrap_model(self.model, info, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.probe = ActivityProbe(self.model)

    def release(self) -> None:
        """Drop the run directory's lock (rank 0); the trainer is done with it."""
        if self.lock is not None:
            self.lock.release()

    # ---- setup ---------------------------------------------------------------------

    def _make_rule(self) -> Any:
        from bdh.learning import make_learning_rule

        cfg = self.cfg
        rule = make_learning_rule(
            cfg.learning_mode, cfg.hebbian_lr, cfg.prune_every, cfg.prune_threshold, cfg.homeostatic_scaling,
            readout_lr=cfg.readout_lr, predictive_lr=cfg.predictive_lr,
        )  # fmt: skip
        if rule is not None:
            rule.attach(self.model)
        return rule

    def _carried_state(self) -> CarriedState | None:
        cfg = self.cfg
        if not cfg.carry_state:
            return None
        if not self.model.carries_state:
            raise ConfigError(f"the {cfg.model} model cannot carry its state across windows (--carry-state)")
        schedule = StreamSchedule(len(self.corpus.train), cfg.batch_size, cfg.block_size, cfg.seed, cfg.reset_tokens)
        return CarriedState(self.model, schedule, self.info, self.micro, self.device)

    def _resume(self) -> None:
        path = latest_checkpoint(self.run_dir)
        snap = load_training_checkpoint(path, self.model)
        if self.carried is not None:
            if snap.carried_state is None:
                raise ConfigError(f"checkpoint {path} has no carried state to resume from")
            self.carried.load_state_dict(snap.carried_state, str(path))
        load_optimizer_tensors(self.optimizer, snap.optimizer_tensors, snap.optimizer_groups, str(path))
        if self.rule is not None:
            if snap.rule_state is None:
                raise ConfigError(f"checkpoint {path} has no learning-rule state to resume from")
            self.rule.load_state_dict(snap.rule_state)
        self.step, self.tokens_seen, self.train_time = snap.step, snap.tokens_seen, snap.train_time_s
        same_ranks = snap.world_size == self.info.world_size
        if same_ranks:
            restore_rng(snap.rng, self.device)
        if not same_ranks or self.info.rank:  # the saved generator is rank 0's
            torch.manual_seed(rank_seed(self.cfg.seed, self.info.rank, self.step))
        if self.info.is_main:
            truncate_metrics(self.run_dir, self.step)

    # ---- one step ------------------------------------------------------------------

    @property
    def _backprop(self) -> bool:
        return self.rule is None or self.rule.uses_backprop

    def _train_step(self, measure: bool) -> Tensor:
        """Forward/backward over this rank's micro-batches; returns this rank's mean loss."""
        cfg = self.cfg
        if self.carried is not None:
            starts = self.carried.schedule.starts(self.step)
        else:
            starts = random_window_starts(cfg.seed, self.step, cfg.batch_size, len(self.corpus.train), cfg.block_size)
        mine = starts[self.info.rank * self.rows_per_rank : (self.info.rank + 1) * self.rows_per_rank]
        backprop = self._backprop
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
            with sync, grad_mode, autocast(self.precision, self.device):
                if self.carried is None:
                    _, loss = self.ddp_model(x, y)
                else:
                    _, loss, state = self.ddp_model(x, y, state=self.carried.begin(self.step, i))
                    self.carried.end(i, state)
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
        writer = None
        if self.info.is_main:
            tb = self.run_dir / "tensorboard" if self.cfg.tensorboard else None
            writer = MetricsWriter(self.run_dir / METRICS_FILE, tb)
        bar = self._progress_bar()
        self.window = _LogWindow()
        try:
            with _StopSignals() as signals, _buffer_reuse(self.device):
                while self.step < self.cfg.steps:
                    if not self._step(signals, writer, bar):
                        break
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
            self.probe.remove()
            self.release()
        return self.run_dir

    def _step(self, signals: _StopSignals, writer: MetricsWriter | None, bar: Any) -> bool:
        """One optimizer step, then its logging, evaluation and checkpoint.

        Returns False when the time budget is spent; raises on divergence and on a stop signal.
        """
        cfg = self.cfg
        measure = (self.step + 1) % cfg.log_every == 0
        t0 = time.perf_counter()
        loss_sum = self._train_step(measure)
        status = self._status(loss_sum, signals, t0)
        if status.nonfinite > 0:
            raise self._diverged(f"the training loss became {loss_sum.item()}")
        lr = lr_at(
            self.step, cfg.steps, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.schedule,
            status.progress if cfg.time_budget_s else None,
        )  # fmt: skip
        grad_norm = self._optimizer_step(lr) if self._backprop else None
        self.step += 1
        out_of_time = bool(cfg.time_budget_s) and status.progress >= 1.0
        last = self.step >= cfg.steps or out_of_time
        # The rule sees the number of completed steps (prune_every=k: steps k, 2k, ...) and
        # the schedule, which its delta rules follow as the optimizer does.
        rule_metrics = (
            self.rule.after_step(self.model, self.step, report=measure or last, rate_scale=lr / cfg.lr)
            if self.rule
            else {}
        )
        dt = time.perf_counter() - t0
        tokens = cfg.batch_size * cfg.block_size
        self.train_time += dt
        self.tokens_seen += tokens
        self.window.add(status.loss_sum / self.info.world_size, dt, tokens)
        if bar is not None:
            bar.update(1)
        if measure or last:
            self._log(writer, bar, lr, grad_norm, rule_metrics, measure)
        if self.step % cfg.eval_every == 0 or last:
            self._evaluate(writer, bar)
        self._checkpoint_or_stop(signals, status, last)
        return not out_of_time

    def _status(self, loss_sum: Tensor, signals: _StopSignals, t0: float) -> _StepStatus:
        """The step's status on every rank: the loss, NaN flags, stop requests, rank 0's clock."""
        progress = 0.0
        if self.cfg.time_budget_s and self.info.is_main:
            progress = (self.train_time + time.perf_counter() - t0) / self.cfg.time_budget_s
        loss = loss_sum.item()
        mine = _StepStatus(
            loss_sum=loss,
            nonfinite=0.0 if math.isfinite(loss) else 1.0,
            stop_requests=1.0 if signals.received else 0.0,
            progress=progress,
        )
        return mine.all_reduced(self.info, self.device)

    def _log(
        self,
        writer: MetricsWriter | None,
        bar: Any,
        lr: float,
        grad_norm: float | None,
        rule_metrics: dict[str, Any],
        measure: bool,
    ) -> None:
        """Write the train record of the steps since the last one and start a new window."""
        w = self.window
        record = {
            "step": self.step,
            "loss": w.loss / w.steps,
            "lr": lr,
            "tokens_per_s": w.tokens / max(w.time, 1e-9),
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
        self.window = _LogWindow()

    def _checkpoint_or_stop(self, signals: _StopSignals, status: _StepStatus, last: bool) -> None:
        # On one rank a signal is seen at once; with DDP, through the all-reduce.
        stop = status.stop_requests > 0 or (not self.info.enabled and signals.received is not None)
        if self.step % self.cfg.checkpoint_every == 0 or last or stop:
            self._checkpoint()
        if stop:
            name = signals.received or "a stop signal on another rank"
            raise TrainingInterrupted(
                f"training interrupted by {name} at step {self.step}; checkpoint saved; "
                f"continue with: bdh train --resume {self.run_dir}",
                self.run_dir,
                self.step,
            )

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
        carried = self.carried.state_dict() if self.carried is not None else None  # all ranks
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
                carried_state=carried,
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
