"""The four benchmarks. Each returns a `BenchResult`: one row per setting comparing the
official code and ours on the same weights and inputs, measured back to back in one process
(except `bench_memory`, which measures every case in a fresh child process)."""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bdh.buffers import cached_bytes, release_cpu_buffers, reuse_cpu_buffers
from bdh.config import preset as config_of_preset
from bdh.experiments.bench import counts
from bdh.experiments.bench.counts import Work
from bdh.experiments.bench.measure import PeakMemory, measure, synchronize
from bdh.experiments.bench.reference import check_agreement, official_and_ours
from bdh.experiments.bench.roofline import Roofline
from bdh.model import PREFILL_CHUNK
from bdh.precision import autocast, resolve_precision

MB = 2**20


@dataclass
class Row:
    """One setting: tokens/s and peak memory (MiB) of each side; None where not run."""

    preset: str
    setting: str
    official_tokens_per_s: float | None
    ours_tokens_per_s: float | None
    official_peak_mib: float | None
    ours_peak_mib: float | None
    official_extrapolated: bool = False  # True: the official time is a fit, not a measurement
    note: str = ""
    # Achieved rates of the counted work (bench/counts.py), and the precision the products
    # of each side ran in (which matrix-product peak applies).
    official_gflops: float | None = None
    ours_gflops: float | None = None
    official_gbps: float | None = None
    ours_gbps: float | None = None
    official_precision: str = "fp32"
    ours_precision: str = "fp32"

    def set_rates(self, side: str, work: Work, seconds: float) -> None:
        setattr(self, f"{side}_gflops", work.flops / seconds / 1e9)
        setattr(self, f"{side}_gbps", work.bytes / seconds / 1e9)

    def shares(self, roofline: Roofline) -> dict[str, float | None]:
        """Achieved rates as fractions of the machine's limits."""
        out: dict[str, float | None] = {}
        for side in ("official", "ours"):
            gflops, gbps = getattr(self, f"{side}_gflops"), getattr(self, f"{side}_gbps")
            peak = roofline.peak_gflops(getattr(self, f"{side}_precision"))
            out[f"{side}_flops_share"] = None if gflops is None else gflops / peak
            out[f"{side}_bandwidth_share"] = None if gbps is None else gbps / roofline.bandwidth_gbps
        return out

    @property
    def ratio(self) -> float | None:
        if not self.official_tokens_per_s or self.ours_tokens_per_s is None:
            return None
        return self.ours_tokens_per_s / self.official_tokens_per_s

    def to_dict(self, roofline: Roofline | None = None) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, **(self.shares(roofline) if roofline else {})}


@dataclass
class BenchResult:
    bench: str
    device: str
    settings: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    agreement: dict[str, float] = field(default_factory=dict)  # max relative logits error
    roofline: Roofline | None = None  # the machine's limits, measured before the run
    # The machine may be shared: its load when the run started (the environment adds the end).
    load_at_start: list[float] | None = field(
        default_factory=lambda: [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "device": self.device,
            "settings": self.settings,
            "environment": {**environment(self.device), "load_average_at_start": self.load_at_start},
            "agreement_relative_error": self.agreement,
            "roofline": None if self.roofline is None else self.roofline.to_dict(),
            "work_counting": "bdh.experiments.bench.counts (docs/performance.md, 'Share of the machine's limits')",
            "rows": [r.to_dict(self.roofline) for r in self.rows],
        }


def environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if hasattr(os, "getloadavg"):
        env["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def _tokens(vocab: int, shape: tuple[int, ...], seed: int, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, shape, generator=generator).to(device)


# ---- training -------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainRecipe:
    """How one side runs a training step: autocast precision, torch.compile, a GradScaler,
    the optimizer's settings, gradient clipping, and whether its steps reuse freed CPU
    buffers (bdh.buffers: enabled around this side's steps only)."""

    precision: str = "fp32"  # fp32, bf16 or fp16 autocast
    compile: bool = False
    scaler: bool = False
    weight_decay: float = 0.01  # torch's AdamW default
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.0  # 0: no clipping
    param_groups: bool = False  # bdh.train.optim.build_optimizer: decay on matrices only
    reuse_buffers: bool = False  # bdh.buffers.reuse_cpu_buffers around each step (CPU)

    def describe(self) -> str:
        parts = [self.precision if self.precision != "fp32" else "fp32 (no autocast)"]
        parts += ["torch.compile"] * self.compile + ["GradScaler"] * self.scaler
        parts += [f"clip {self.grad_clip:g}"] * (self.grad_clip > 0)
        parts += ["CPU buffer reuse"] * self.reuse_buffers
        return " + ".join(parts)


def official_default_recipe(device: torch.device) -> TrainRecipe:
    """The official train.py on `device`: torch.compile; bf16 autocast on CUDA with bf16,
    fp16 autocast elsewhere on CUDA, none on CPU; a GradScaler enabled whenever its dtype
    is float16, which its code picks on every machine without CUDA bf16 (so on CPU too);
    AdamW with weight decay 0.1."""
    cuda = device.type == "cuda"
    dtype = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp16"
    return TrainRecipe(dtype if cuda else "fp32", compile=True, scaler=dtype == "fp16", weight_decay=0.1)


def ours_default_recipe(device: torch.device) -> TrainRecipe:
    """What `bdh train` does by default on `device` (bdh.train.config.TrainConfig; on CPU
    its loop reuses freed buffers)."""
    from bdh.train.config import TrainConfig

    cfg = TrainConfig()
    precision = resolve_precision(cfg.precision, device, cfg.model)
    return TrainRecipe(
        precision, compile=cfg.compile, scaler=precision == "fp16", weight_decay=cfg.weight_decay,
        betas=(cfg.beta1, cfg.beta2), grad_clip=cfg.grad_clip, param_groups=True,
        reuse_buffers=device.type == "cpu",
    )  # fmt: skip


TRAIN_PRECISIONS = ("fp32", "bf16", "default")


def _train_side(model: torch.nn.Module, recipe: TrainRecipe, device: torch.device, idx, targets):
    """A function running one training step of `model` (a private copy) by `recipe`."""
    import copy

    from bdh.train.optim import build_optimizer

    model = copy.deepcopy(model).train()
    if recipe.param_groups:
        optimizer = build_optimizer(model, 1e-3, recipe.weight_decay, recipe.betas, device)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=recipe.betas,
                                      weight_decay=recipe.weight_decay)  # fmt: skip
    scaler = torch.amp.GradScaler(device.type) if recipe.scaler else None
    forward = torch.compile(model) if recipe.compile else model

    def step() -> None:
        if not recipe.reuse_buffers:
            return train_step()
        # The cache stays filled between this side's steps, and off during the other's.
        with reuse_cpu_buffers(release_on_exit=False):
            train_step()

    def train_step() -> None:
        with autocast(recipe.precision, device):
            _, loss = forward(idx, targets)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler and recipe.grad_clip:
            scaler.unscale_(optimizer)  # clip the true gradients
        if recipe.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip).item()
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _timed_rounds(
    runs: dict[tuple[str, TrainRecipe], Any], warmup: int, steps: int, device: str
) -> tuple[dict[Any, list[float]], dict[Any, int]]:
    """`warmup` untimed rounds, `steps` timed ones, then one round measuring peak memory:
    seconds per timed step, peak bytes per run.

    Timed steps follow each other without handing freed heap memory back to the OS
    (which a peak measurement does first): glibc keeps what it keeps in a process of its
    own, so the official side is timed as it runs alone. A side reusing buffers counts
    the cache it starts a step with (resident, but below the RSS a measurement starts
    from) in its peak.
    """
    for _ in range(warmup):
        for step in runs.values():
            step()
    times: dict[Any, list[float]] = {key: [] for key in runs}
    for _ in range(steps):
        for key, step in runs.items():
            start = time.perf_counter()
            step()
            synchronize(device)
            times[key].append(time.perf_counter() - start)
    peaks: dict[Any, int] = {}
    for key, step in runs.items():
        held = cached_bytes() if key[1].reuse_buffers else 0
        peaks[key] = measure(step, device).peak_bytes + held
    return times, peaks


def bench_train(
    preset: str = "small",
    *,
    reference: str | Path,
    batch_size: int = 8,
    block_size: int = 256,
    steps: int = 5,
    warmup: int = 2,
    precision: str | Sequence[str] = "fp32",
    device: str = "cpu",
    seed: int = 0,
    roofline: Roofline | None = None,
) -> BenchResult:
    """Forward + backward + optimizer step: one row per precision, all in one run.

    fp32 / bf16 compare like with like (both sides under the same autocast, plain AdamW;
    on CPU our steps reuse freed buffers, `TrainRecipe.reuse_buffers`, the official's use
    torch's default allocator);
    "default" compares the two as their own recipes run on this device: the official
    train.py (`official_default_recipe`) against `bdh train` (`ours_default_recipe`).
    Every distinct (side, recipe) runs `warmup` untimed steps first (first calls, C++
    kernel builds and torch.compile excluded from the timings), then the timed steps
    interleave: each round steps every one of them once. Tokens/s is batch_size *
    block_size over the median step time; the peak comes from one more round (`_timed_rounds`).
    """
    precisions = [precision] if isinstance(precision, str) else list(precision)
    for p in precisions:
        if p not in TRAIN_PRECISIONS:
            raise ValueError(f"unknown precision {p!r}")
    torch_device = torch.device(device)
    ref, ours = official_and_ours(preset, reference, device, seed)
    vocab = ours.config.vocab_size
    idx = _tokens(vocab, (batch_size, block_size), seed, device)
    targets = _tokens(vocab, (batch_size, block_size), seed + 1, device)
    with torch.no_grad():
        agreement = check_agreement(ours.eval()(idx)[0], ref.eval()(idx)[0], "train")
    pairs = {
        p: (official_default_recipe(torch_device), ours_default_recipe(torch_device))
        if p == "default" else (TrainRecipe(p), TrainRecipe(p, reuse_buffers=torch_device.type == "cpu"))
        for p in precisions
    }  # fmt: skip
    runs: dict[tuple[str, TrainRecipe], Any] = {}
    for official_recipe, ours_recipe in pairs.values():
        for side, model, recipe in (("official", ref, official_recipe), ("ours", ours, ours_recipe)):
            if (side, recipe) not in runs:
                runs[side, recipe] = _train_side(model, recipe, torch_device, idx, targets)
    result = BenchResult("train", device, dict(
        batch_size=batch_size, block_size=block_size, steps=steps, precision=precisions,
        warmup=f"{warmup} untimed steps per side and recipe (first calls, kernel builds, torch.compile)",
        timing="rounds: every side and recipe steps once per round; median step time; no heap "
               "trimming between timed steps; peak memory from one more round, each step after a trim",
        recipes={f"{side}: {recipe.describe()}": repr(recipe) for side, recipe in runs},
    ), roofline=roofline)  # fmt: skip
    result.agreement["logits"] = agreement
    try:
        times, peaks = _timed_rounds(runs, warmup, steps, device)
    finally:
        release_cpu_buffers()
    tokens = batch_size * block_size
    for p, (official_recipe, ours_recipe) in pairs.items():
        keys = ("official", official_recipe), ("ours", ours_recipe)
        seconds = [statistics.median(times[key]) for key in keys]
        note = "" if p != "default" else f"official: {official_recipe.describe()}; ours: {ours_recipe.describe()}"
        row = Row(
            preset, f"B={batch_size} T={block_size} {p}", tokens / seconds[0], tokens / seconds[1],
            peaks[keys[0]] / MB, peaks[keys[1]] / MB, note=note,
            official_precision=official_recipe.precision, ours_precision=ours_recipe.precision,
        )  # fmt: skip
        for (side, recipe), s in zip(keys, seconds):
            row.set_rates(side, counts.train_step_work(ours.config, batch_size, block_size, recipe.precision), s)
        result.rows.append(row)
    return result


# ---- generation -----------------------------------------------------------------------


def _recurrent_agreement(ref: torch.nn.Module, ours: torch.nn.Module, seq: torch.Tensor) -> float:
    """Ours by prefill of half of seq then one step per token, vs official over all of seq."""
    half = seq.shape[1] // 2
    with torch.no_grad():
        expected = ref(seq)[0]
    logits, state = ours.prefill(seq[:, :half], ours.init_state(seq.shape[0]))
    pieces = [logits]
    for t in range(half, seq.shape[1]):
        step_logits, state = ours.step(seq[:, t], state)
        pieces.append(step_logits[:, None])
    return check_agreement(torch.cat(pieces, dim=1), expected, "recurrent prefill + step")


def _official_generation(
    ref: torch.nn.Module, prompt: torch.Tensor, n_tokens: int, device: str
) -> tuple[list[float], list[int]]:
    """Run official generate() for n_tokens: seconds and peak bytes after each new token."""
    ends: list[float] = []
    peaks: list[int] = []
    with PeakMemory(device) as memory:

        def record(*_: object) -> None:
            synchronize(device)
            ends.append(time.perf_counter())
            peaks.append(memory.peak())

        handle = ref.register_forward_hook(record)
        try:
            start = time.perf_counter()
            ref.generate(prompt, n_tokens)
        finally:
            handle.remove()
    return [end - start for end in ends], peaks


def _extrapolate(elapsed: list[float], prompt_len: int, n_tokens: int) -> float:
    """Seconds for n_tokens, from per-token times t(L) fitted as a + b L + c L^2 in the
    context length L (the official code recomputes the whole prefix for each token)."""
    steps = np.diff(np.asarray([0.0, *elapsed]))
    lengths = prompt_len + np.arange(len(steps))
    tail = slice(len(steps) // 4, None)  # skip the first tokens, where warm-up dominates
    design = np.stack([np.ones_like(lengths), lengths, lengths**2], axis=1)[tail].astype(float)
    coef, *_ = np.linalg.lstsq(design, steps[tail], rcond=None)
    more = prompt_len + np.arange(len(steps), n_tokens, dtype=float)
    return elapsed[-1] + float(np.clip(coef[0] + coef[1] * more + coef[2] * more**2, 0, None).sum())


def bench_generate(
    presets: Sequence[str] = ("tiny", "small"),
    *,
    reference: str | Path,
    new_tokens: Sequence[int] = (128, 512, 2048),
    batch_size: int = 1,
    prompt_len: int = 16,
    max_official_tokens: int = 512,
    device: str = "cpu",
    seed: int = 0,
    repeats: int = 3,
    roofline: Roofline | None = None,
) -> BenchResult:
    """Official generate() (recomputes the prefix for every token) vs ours (recurrent state).

    Both sides are timed the same way: `repeats` interleaved rounds, each running the
    official generate() once, for min(max(new_tokens), max_official_tokens) tokens (the
    time to each shorter length read off that run), then ours once per length; each row
    keeps the median over the rounds of each side. Longer lengths are extrapolated, per
    round, from a quadratic fit of the official per-token times, and flagged as such.
    Both sides first generate a few untimed tokens (first calls, C++ kernel build).
    """
    result = BenchResult("generate", device, dict(
        new_tokens=list(new_tokens), batch_size=batch_size, prompt_len=prompt_len,
        max_official_tokens=max_official_tokens, sampling="temperature 1, multinomial",
        timing=f"{repeats} interleaved rounds (official once, then ours once per length); median of each side",
        warmup="both sides generate 4 untimed tokens first (first calls, C++ kernel build excluded)",
    ), roofline=roofline)  # fmt: skip
    for preset in presets:
        ref, ours = official_and_ours(preset, reference, device, seed)
        ref.eval(), ours.eval()
        config = ours.config
        seq = _tokens(config.vocab_size, (batch_size, 64), seed + 2, device)
        result.agreement[preset] = _recurrent_agreement(ref, ours, seq)
        prompt = _tokens(config.vocab_size, (batch_size, prompt_len), seed, device)
        n_official = min(max(new_tokens), max_official_tokens)
        ref.generate(prompt, 4), ours.generate(prompt, 4)
        official: dict[int, list[float]] = {n: [] for n in new_tokens}
        mine: dict[int, list[float]] = {n: [] for n in new_tokens}
        official_peaks: list[int] = []
        peaks = dict.fromkeys(new_tokens, 0)
        for _ in range(repeats):
            torch.manual_seed(seed)
            elapsed, round_peaks = _official_generation(ref, prompt, n_official, device)
            official_peaks = [max(a, b) for a, b in zip(official_peaks, round_peaks)] or round_peaks
            for n in new_tokens:
                official[n].append(elapsed[n - 1] if n <= n_official else _extrapolate(elapsed, prompt_len, n))
            for n in sorted(new_tokens):
                torch.manual_seed(seed)
                m = measure(lambda: ours.generate(prompt, n), device)  # noqa: B023 (called at once)
                mine[n].append(m.seconds)
                peaks[n] = max(peaks[n], m.peak_bytes)
        for n in sorted(new_tokens):
            measured = n <= n_official
            official_s, seconds = statistics.median(official[n]), statistics.median(mine[n])
            row = Row(
                preset, f"B={batch_size} +{n} tokens",
                batch_size * n / official_s, batch_size * n / seconds,
                official_peaks[n - 1] / MB if measured else None, peaks[n] / MB,
                official_extrapolated=not measured,
                note="" if measured else f"official extrapolated from {n_official} measured tokens",
            )  # fmt: skip
            row.set_rates("official", counts.official_generate_work(config, batch_size, prompt_len, n), official_s)
            row.set_rates(
                "ours", counts.ours_generate_work(config, batch_size, prompt_len, n, PREFILL_CHUNK), seconds
            )
            result.rows.append(row)
    return result


# ---- long prefill ---------------------------------------------------------------------


def _scores_gib(config: Any, batch_size: int, length: int) -> float:
    return batch_size * config.n_head * length * length * 4 / 2**30


def bench_prefill(
    preset: str = "small",
    *,
    reference: str | Path,
    lengths: Sequence[int] = (16384,),
    batch_size: int = 1,
    max_official_tokens: int = 4096,
    device: str = "cpu",
    seed: int = 0,
    roofline: Roofline | None = None,
) -> BenchResult:
    """Consume a long prompt: official forward() (quadratic) vs our chunked prefill.

    The official side runs only up to max_official_tokens: beyond that its T x T scores
    alone need B * H * T^2 * 4 bytes, given in the note.
    """
    ref, ours = official_and_ours(preset, reference, device, seed)
    ref.eval(), ours.eval()
    vocab = ours.config.vocab_size
    result = BenchResult("prefill", device, dict(
        lengths=list(lengths), batch_size=batch_size, max_official_tokens=max_official_tokens,
        warmup="the agreement check runs both sides first (first calls excluded)",
    ), roofline=roofline)  # fmt: skip
    check = _tokens(vocab, (batch_size, min(PREFILL_CHUNK + 256, max_official_tokens)), seed + 3, device)
    with torch.no_grad():
        expected = ref(check)[0]
    # The check is long enough to cross a prefill chunk boundary.
    result.agreement["prefill"] = check_agreement(ours.prefill(check)[0], expected, "prefill")
    for length in lengths:
        idx = _tokens(vocab, (batch_size, length), seed, device)
        m = measure(lambda: ours.prefill(idx, ours.init_state(batch_size), all_logits=False), device)  # noqa: B023
        official_tps = official_peak = None
        note = f"ours: state {ours.init_state(batch_size).nbytes() / MB:.1f} MiB"
        if length <= max_official_tokens:
            with torch.no_grad():
                r = measure(lambda: ref(idx), device)  # noqa: B023 (called at once)
            official_tps, official_peak = batch_size * length / r.seconds, r.peak_bytes / MB
        else:
            note += f"; official not run: its scores alone need {_scores_gib(ours.config, batch_size, length):.1f} GiB"
        row = Row(
            preset, f"B={batch_size} T={length}", official_tps, batch_size * length / m.seconds,
            official_peak, m.peak_bytes / MB, note=note,
        )  # fmt: skip
        row.set_rates("ours", counts.prefill_work(ours.config, batch_size, length, PREFILL_CHUNK), m.seconds)
        if official_tps is not None:
            row.set_rates("official", counts.forward_work(ours.config, batch_size, length), r.seconds)
        result.rows.append(row)
    return result


# ---- memory in fresh processes --------------------------------------------------------


def _memory_child(task: dict[str, Any]) -> dict[str, float]:
    """Runs in a fresh process: build the pair, keep one side, measure one forward/prefill."""
    torch.set_num_threads(task["threads"])
    ref, ours = official_and_ours(task["preset"], task["reference"], task["device"], task["seed"])
    model = ref.eval() if task["side"] == "official" else ours.eval()
    del ref, ours
    idx = _tokens(model.config.vocab_size, (task["batch_size"], task["length"]), task["seed"], task["device"])
    if task["side"] == "official":
        with torch.no_grad():
            m = measure(lambda: model(idx), task["device"])
    else:
        m = measure(lambda: model.prefill(idx, model.init_state(task["batch_size"]), all_logits=False), task["device"])
    return {"seconds": m.seconds, "peak_bytes": m.peak_bytes}


def bench_memory(
    preset: str = "small",
    *,
    reference: str | Path,
    lengths: Sequence[int] = (1024, 4096, 16384),
    batch_size: int = 1,
    max_official_tokens: int = 4096,
    device: str = "cpu",
    seed: int = 0,
    roofline: Roofline | None = None,
) -> BenchResult:
    """Peak memory of consuming T tokens, each case in a fresh child process.

    Official: forward() over the whole sequence (up to max_official_tokens). Ours: chunked
    prefill, whose state does not grow with T. The agreement check runs here first.
    """
    ref, ours = official_and_ours(preset, reference, device, seed)
    check = _tokens(ours.config.vocab_size, (batch_size, 256), seed + 3, device)
    with torch.no_grad():
        expected = ref.eval()(check)[0]
    result = BenchResult("memory", device, dict(
        lengths=list(lengths), batch_size=batch_size, max_official_tokens=max_official_tokens,
        method="peak RSS above the RSS before the call, sampled every 1 ms in a fresh process"
        if device == "cpu" else "torch.cuda.max_memory_allocated in a fresh process",
    ), roofline=roofline)  # fmt: skip
    result.agreement["prefill"] = check_agreement(ours.eval().prefill(check)[0], expected, "prefill")
    state_mib = ours.init_state(batch_size).nbytes() / MB
    config = ours.config
    del ref, ours
    context = multiprocessing.get_context("spawn")
    base = dict(preset=preset, reference=str(reference), device=device,
                seed=seed, batch_size=batch_size, threads=torch.get_num_threads())  # fmt: skip
    for length in lengths:
        runs: dict[str, dict[str, float] | None] = {"official": None, "ours": None}
        for side in runs:
            if side == "official" and length > max_official_tokens:
                continue
            with context.Pool(processes=1, maxtasksperchild=1) as pool:
                runs[side] = pool.apply(_memory_child, ({**base, "side": side, "length": length},))
        official, mine = runs["official"], runs["ours"]
        note = f"ours: state {state_mib:.1f} MiB"
        if official is None:
            gib = _scores_gib(config_of_preset(preset), batch_size, length)
            note += f"; official not run: its scores alone need {gib:.1f} GiB"
        row = Row(
            preset, f"B={batch_size} T={length}",
            None if official is None else batch_size * length / official["seconds"],
            batch_size * length / mine["seconds"],
            None if official is None else official["peak_bytes"] / MB, mine["peak_bytes"] / MB,
            note=note,
        )  # fmt: skip
        row.set_rates("ours", counts.prefill_work(config, batch_size, length, PREFILL_CHUNK), mine["seconds"])
        if official is not None:
            row.set_rates("official", counts.forward_work(config, batch_size, length), official["seconds"])
        result.rows.append(row)
    return result


def format_table(result: BenchResult) -> str:
    """A plain-text table of the result, with the settings and environment above it."""
    env = environment(result.device)
    lines = [
        f"bdh bench {result.bench} | device {result.device} | torch {env['torch']} | "
        f"{env['threads']} threads | load average at start {result.load_at_start}, "
        f"at end {env.get('load_average', 'n/a')}",
        "settings: " + ", ".join(f"{k}={v}" for k, v in result.settings.items()),
        "agreement (max relative logits error): "
        + ", ".join(f"{k} {v:.1e}" for k, v in result.agreement.items()),
    ]
    header = ["preset", "setting", "official tok/s", "ours tok/s", "ours/official",
              "official peak MiB", "ours peak MiB", "note"]  # fmt: skip
    body = []
    for r in result.rows:
        star = "*" if r.official_extrapolated else ""
        body.append([
            r.preset, r.setting, _num(r.official_tokens_per_s, star), _num(r.ours_tokens_per_s),
            _num(r.ratio, star, suffix="x"), _num(r.official_peak_mib), _num(r.ours_peak_mib), r.note,
        ])  # fmt: skip
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    for row in [header, *body]:
        lines.append("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    if any(r.official_extrapolated for r in result.rows):
        lines.append("* extrapolated, not measured (see note)")
    if result.roofline is not None:
        lines += ["", *format_shares(result)]
    return "\n".join(lines)


def format_shares(result: BenchResult) -> list[str]:
    """Each row's achieved GFLOP/s and GB/s (counted work over time) against the limits."""
    roof = result.roofline
    lines = [
        f"machine limits ({roof.threads} threads): matmul {roof.fp32_gflops:,.1f} GFLOP/s fp32, "
        f"{roof.bf16_gflops:,.1f} bf16; streaming {roof.bandwidth_gbps:,.1f} GB/s "
        f"(copy {roof.copy_gbps:,.1f}, add {roof.add_gbps:,.1f})",
        "achieved (work counted from the shapes, bdh.experiments.bench.counts; % of the limit):",
    ]
    header = ["preset", "setting", "side", "precision", "GFLOP/s", "% matmul peak", "GB/s", "% bandwidth"]
    body = []
    for r in result.rows:
        shares = r.shares(roof)
        for side in ("official", "ours"):
            gflops = getattr(r, f"{side}_gflops")
            if gflops is None:
                continue
            star = "*" if side == "official" and r.official_extrapolated else ""
            body.append([
                r.preset, r.setting, side, getattr(r, f"{side}_precision"), _num(gflops, star),
                _percent(shares[f"{side}_flops_share"]), _num(getattr(r, f"{side}_gbps"), star),
                _percent(shares[f"{side}_bandwidth_share"]),
            ])  # fmt: skip
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    for row in [header, *body]:
        lines.append("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    return lines


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def _num(value: float | None, mark: str = "", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    digits = 1 if value < 100 else 0
    return f"{value:,.{digits}f}{suffix}{mark}"
