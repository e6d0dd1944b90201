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

from bdh.config import preset as config_of_preset
from bdh.experiments.bench.measure import PeakMemory, measure, synchronize
from bdh.experiments.bench.reference import check_agreement, official_and_ours
from bdh.model import PREFILL_CHUNK
from bdh.precision import autocast

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

    @property
    def ratio(self) -> float | None:
        if not self.official_tokens_per_s or self.ours_tokens_per_s is None:
            return None
        return self.ours_tokens_per_s / self.official_tokens_per_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class BenchResult:
    bench: str
    device: str
    settings: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    agreement: dict[str, float] = field(default_factory=dict)  # max relative logits error
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
            "rows": [r.to_dict() for r in self.rows],
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


def bench_train(
    preset: str = "small",
    *,
    reference: str | Path,
    batch_size: int = 8,
    block_size: int = 256,
    steps: int = 5,
    warmup: int = 1,
    precision: str = "fp32",
    device: str = "cpu",
    seed: int = 0,
) -> BenchResult:
    """Forward + backward + AdamW step, the two sides alternating step by step.

    Tokens/s is batch_size * block_size over the median step time; the peak is the
    largest over the timed steps.
    """
    ref, ours = official_and_ours(preset, reference, device, seed)
    vocab = ours.config.vocab_size
    idx = _tokens(vocab, (batch_size, block_size), seed, device)
    targets = _tokens(vocab, (batch_size, block_size), seed + 1, device)
    result = BenchResult("train", device, dict(
        batch_size=batch_size, block_size=block_size, steps=steps, warmup=warmup, precision=precision,
    ))  # fmt: skip
    with torch.no_grad():
        result.agreement["logits"] = check_agreement(ours.eval()(idx)[0], ref.eval()(idx)[0], "train")
    sides = {
        "official": (ref.train(), torch.optim.AdamW(ref.parameters(), lr=1e-3)),
        "ours": (ours.train(), torch.optim.AdamW(ours.parameters(), lr=1e-3)),
    }

    def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        with autocast(precision, device):
            _, loss = model(idx, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        for model, optimizer in sides.values():
            step(model, optimizer)
    times: dict[str, list[float]] = {name: [] for name in sides}
    peaks: dict[str, int] = {name: 0 for name in sides}
    for _ in range(steps):
        for name, (model, optimizer) in sides.items():
            m = measure(lambda: step(model, optimizer), device)  # noqa: B023 (called at once)
            times[name].append(m.seconds)
            peaks[name] = max(peaks[name], m.peak_bytes)
    tokens = batch_size * block_size
    result.rows.append(Row(
        preset, f"B={batch_size} T={block_size} {precision}",
        tokens / statistics.median(times["official"]), tokens / statistics.median(times["ours"]),
        peaks["official"] / MB, peaks["ours"] / MB,
    ))  # fmt: skip
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
) -> BenchResult:
    """Official generate() (recomputes the prefix for every token) vs ours (recurrent state).

    The official side runs once, for min(max(new_tokens), max_official_tokens) tokens (a
    minute or more, so passing disturbances average out); the time to each shorter length
    is read off that run. Longer lengths are extrapolated from a quadratic fit of its
    per-token times and flagged as such. Ours takes about a second per length, so one
    disturbance can halve a single run: it is timed `repeats` times, the median kept.
    """
    result = BenchResult("generate", device, dict(
        new_tokens=list(new_tokens), batch_size=batch_size, prompt_len=prompt_len,
        max_official_tokens=max_official_tokens, sampling="temperature 1, multinomial",
        ours_timing=f"median of {repeats} runs",
    ))  # fmt: skip
    for preset in presets:
        ref, ours = official_and_ours(preset, reference, device, seed)
        ref.eval(), ours.eval()
        vocab = ours.config.vocab_size
        seq = _tokens(vocab, (batch_size, 64), seed + 2, device)
        result.agreement[preset] = _recurrent_agreement(ref, ours, seq)
        prompt = _tokens(vocab, (batch_size, prompt_len), seed, device)
        n_official = min(max(new_tokens), max_official_tokens)
        torch.manual_seed(seed)
        elapsed, official_peaks = _official_generation(ref, prompt, n_official, device)
        for n in sorted(new_tokens):
            runs = []
            for _ in range(repeats):
                torch.manual_seed(seed)
                runs.append(measure(lambda: ours.generate(prompt, n), device))  # noqa: B023
            seconds = statistics.median(m.seconds for m in runs)
            peak = max(m.peak_bytes for m in runs)
            measured = n <= n_official
            official_s = elapsed[n - 1] if measured else _extrapolate(elapsed, prompt_len, n)
            result.rows.append(Row(
                preset, f"B={batch_size} +{n} tokens",
                batch_size * n / official_s, batch_size * n / seconds,
                official_peaks[n - 1] / MB if measured else None, peak / MB,
                official_extrapolated=not measured,
                note="" if measured else f"official extrapolated from {n_official} measured tokens",
            ))  # fmt: skip
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
    ))  # fmt: skip
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
        result.rows.append(Row(
            preset, f"B={batch_size} T={length}", official_tps, batch_size * length / m.seconds,
            official_peak, m.peak_bytes / MB, note=note,
        ))  # fmt: skip
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
    ))  # fmt: skip
    result.agreement["prefill"] = check_agreement(ours.eval().prefill(check)[0], expected, "prefill")
    state_mib = ours.init_state(batch_size).nbytes() / MB
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
        result.rows.append(Row(
            preset, f"B={batch_size} T={length}",
            None if official is None else batch_size * length / official["seconds"],
            batch_size * length / mine["seconds"],
            None if official is None else official["peak_bytes"] / MB, mine["peak_bytes"] / MB,
            note=note,
        ))  # fmt: skip
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
    return "\n".join(lines)


def _num(value: float | None, mark: str = "", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    digits = 1 if value < 100 else 0
    return f"{value:,.{digits}f}{suffix}{mark}"
