"""`bdh compare`: train several models on the same data, budgets and seeds; report.

Each run is trained by `bdh.train.train` in a fresh process, so its peak resident
memory is its own. Every entry runs over several seeds and two budgets: the same tokens
(steps x batch x block) and, separately, the same training wall time. After training,
every model is measured the same way: activation sparsity and the spread of per-neuron
firing rates on a fixed validation batch, weight sparsity of its synapse matrices, and the
bytes of its inference state (or KV cache) after prefilling contexts of several lengths.
Studies beside the line-up: a sweep of the hybrid mode's Hebbian rate, a pruning curve
(magnitude thresholds), homeostasis on and off. Count models (unigram, bigram, trigram)
on the same split are the floors. Writes `report.md`, `report.json` and PNG plots.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import multiprocessing
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bdh.errors import ConfigError
from bdh.experiments.report import ReportDir, cpu_name, machine_info


@dataclass
class Entry:
    """One model to train: a name for the report and its training options."""

    name: str
    model: str
    preset: str = "tiny"
    learning_mode: str = "backprop"
    options: dict[str, Any] = field(default_factory=dict)  # other TrainConfig fields


# The default line-up: seed 002's three columns (standard backprop, BDH hybrid, BDH
# Hebbian-only) plus BDH with backprop and the neuro model. The Hebbian entry's Oja rate
# is its own: at the hybrid's rate Oja drags the encoders to one principal direction.
DEFAULT_ENTRIES: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("gpt-backprop", "gpt"),
        Entry("bdh-backprop", "bdh"),
        Entry(
            "bdh-hybrid", "bdh", learning_mode="hybrid",
            options=dict(prune_every=50, prune_threshold=0.005, homeostatic_scaling=True),
        ),
        Entry("bdh-hebbian", "bdh", learning_mode="hebbian", options=dict(hebbian_lr=1e-5)),
        Entry("neuro-backprop", "neuro", preset="small", options=dict(model_overrides={"bptt": 64})),
    )
}  # fmt: skip

SEED002_COLUMNS = (
    ("Standard Transformer (Backprop)", "gpt-backprop"),
    ("BDH (Backprop)", "bdh-backprop"),
    ("BDH (Hybrid)", "bdh-hybrid"),
    ("BDH (Hebbian Only)", "bdh-hebbian"),
)
BUDGETS = ("tokens", "wall")
# A pruning curve's loss "holds" while it stays within this many nats of unpruned backprop.
PRUNE_TOLERANCE = 0.05
PRUNE_EVERY = 25
# A validation-minus-training gap below this is read as no gap (one training batch is noisy).
GAP_NOISE = 0.1


@dataclass
class CompareSettings:
    out_dir: str = "runs/compare"
    entries: list[str] = field(default_factory=lambda: list(DEFAULT_ENTRIES))
    steps: int = 200
    batch_size: int = 16
    block_size: int = 64
    lr: float = 3e-3
    hebbian_lr: float = 1e-3
    seed: int = 1337
    seeds: int = 3  # seeds seed, seed + 1, ... per entry
    wall_budget_s: float | None = None  # also train every entry for this much time (None: no)
    hybrid_lrs: list[float] = field(default_factory=list)  # sweep of the hybrid's Oja rate
    prune_thresholds: list[float] = field(default_factory=list)  # pruning curve (first seed)
    homeostasis: bool = False  # BDH backprop with homeostatic scaling, every seed
    data: str | None = None
    tokenizer: str = "byte"
    eval_every: int = 25
    eval_tokens: int = 16384
    device: str = "cpu"
    threads: int | None = None
    contexts: list[int] = field(default_factory=lambda: [64, 256, 1024, 4096])
    reuse: bool = False  # load runs already trained with the same config (see run_compare)
    in_process: bool = False  # train in this process (smoke): peak RSS is then no run's own

    def __post_init__(self) -> None:
        unknown = [e for e in self.entries if e not in DEFAULT_ENTRIES]
        if unknown or not self.entries:
            raise ConfigError(
                f"unknown model entries {unknown}; choose from: {', '.join(DEFAULT_ENTRIES)}"
            )
        if (
            min(
                self.steps,
                self.batch_size,
                self.block_size,
                self.eval_every,
                self.eval_tokens,
                self.seeds,
            )
            < 1
        ):
            raise ConfigError(
                "steps, batch size, block size, eval every, eval tokens and seeds must be >= 1"
            )
        if not self.contexts or min(self.contexts) < 1:
            raise ConfigError("context lengths must be positive")
        if self.wall_budget_s is not None and not self.wall_budget_s > 0:
            raise ConfigError(f"the wall-time budget must be > 0 s, got {self.wall_budget_s}")
        if any(not lr > 0 for lr in self.hybrid_lrs) or any(t < 0 for t in self.prune_thresholds):
            raise ConfigError("hybrid rates must be > 0 and pruning thresholds >= 0")


# `bdh compare --smoke`: every table and plot in seconds (checks the pipeline, not the science).
SMOKE: dict[str, Any] = dict(
    entries=["bdh-backprop", "bdh-hebbian"],
    steps=3,
    batch_size=2,
    block_size=16,
    eval_every=3,
    eval_tokens=64,
    seeds=2,
    wall_budget_s=0.3,
    hybrid_lrs=[1e-3],
    prune_thresholds=[0.01],
    homeostasis=True,
    contexts=[16, 64],
    threads=1,
    in_process=True,
)


@dataclass(frozen=True)
class Run:
    """One training run: `label` names its row, `study` its table ("main", "hybrid-sweep",
    "pruning", "homeostasis"), `entry` the Entry (as a dict) it trains."""

    label: str
    study: str
    entry: dict[str, Any]
    seed: int
    budget: str = "tokens"

    @property
    def key(self) -> str:
        return f"{self.label}/{self.budget}/seed{self.seed}"


def plan_runs(s: CompareSettings) -> list[Run]:
    """Every run of a comparison, in training order."""
    seeds = [s.seed + i for i in range(s.seeds)]
    budgets = ["tokens"] + (["wall"] if s.wall_budget_s else [])
    runs = [
        Run(name, "main", asdict(DEFAULT_ENTRIES[name]), seed, budget)
        for budget in budgets
        for name in s.entries
        for seed in seeds
    ]
    plain = asdict(DEFAULT_ENTRIES["bdh-backprop"])
    for lr in s.hybrid_lrs:
        entry = {
            **plain,
            "name": f"hybrid-oja-{lr:g}",
            "learning_mode": "hybrid",
            "options": {"hebbian_lr": lr},
        }
        runs += [Run(entry["name"], "hybrid-sweep", entry, seed) for seed in seeds]
    for threshold in s.prune_thresholds:
        options = {"prune_every": PRUNE_EVERY, "prune_threshold": threshold}
        entry = {**plain, "name": f"prune-{threshold:g}", "options": options}
        runs.append(Run(entry["name"], "pruning", entry, seeds[0]))
    if s.homeostasis:
        entry = {
            **plain,
            "name": "bdh-backprop-homeostasis",
            "options": {"homeostatic_scaling": True},
        }
        runs += [Run(entry["name"], "homeostasis", entry, seed) for seed in seeds]
    return runs


def _peak_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _train_config(
    s: CompareSettings, entry: dict[str, Any], seed: int | None = None, budget: str = "tokens",
    run_dir: Path | None = None,
) -> Any:  # fmt: skip
    """The `bdh.train.TrainConfig` of one entry under these settings.

    Budget "wall": the same schedule stretched over `s.wall_budget_s` seconds of training
    (steps then only cap it, at 100 times the token budget's).
    """
    from bdh.train import TrainConfig

    options = dict(entry["options"])
    if entry["learning_mode"] != "backprop":
        options.setdefault("hebbian_lr", s.hebbian_lr)
    cfg_seed = s.seed if seed is None else seed
    steps, time_budget = s.steps, None
    if budget == "wall":
        steps, time_budget = 100 * s.steps, s.wall_budget_s
    return TrainConfig(
        model=entry["model"], preset=entry["preset"], learning_mode=entry["learning_mode"],
        data=s.data, tokenizer=s.tokenizer, steps=steps, time_budget_s=time_budget,
        batch_size=s.batch_size, block_size=s.block_size, lr=s.lr,
        seed=cfg_seed, eval_every=s.eval_every,
        eval_tokens=s.eval_tokens, log_every=max(1, min(10, s.steps // 10)),
        checkpoint_every=steps, keep_last=1, progress=False, device=s.device,
        out_dir=str(run_dir or _run_dir(Path(s.out_dir), entry["name"], budget, cfg_seed)), **options,
    )  # fmt: skip


def _train_and_measure(
    settings: dict[str, Any], entry: dict[str, Any], seed: int | None = None,
    budget: str = "tokens", run_dir: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Runs in a fresh process: train one entry, then measure it."""
    import torch

    from bdh.device import resolve_device
    from bdh.precision import resolve_precision
    from bdh.train import train
    from bdh.train.metrics import read_metrics
    from bdh.train.state import METRICS_FILE

    s = CompareSettings(**settings)
    if s.threads:
        torch.set_num_threads(s.threads)
    cfg = _train_config(s, entry, seed, budget, None if run_dir is None else Path(run_dir))
    rss_before = _peak_rss_bytes()
    trained = train(cfg, force=True)
    rss_peak = _peak_rss_bytes()
    lines = read_metrics(trained / METRICS_FILE)
    result = {
        "name": entry["name"],
        "seed": cfg.seed,
        "budget": budget,
        "train_config": cfg.to_dict(),
        "precision": resolve_precision(cfg.precision, resolve_device(cfg.device), cfg.model),
        "metrics": lines,
        "peak_rss_bytes": rss_peak,
        "rss_before_training_bytes": rss_before,
    }
    result.update(_measure(trained, s))
    return result


def firing_rates(activity: Any) -> Any:
    """Per-neuron firing rates (fraction of non-zero entries) of one probe's activity:
    [B, H, T, N] -> [H, N] (BDH), else [..., N] -> [N] (the last axis holds the neurons)."""
    active = (activity != 0).float()
    if active.dim() == 4:
        return active.mean(dim=(0, 2))
    return active.reshape(-1, active.shape[-1]).mean(dim=0)


def rate_spread(rates: Any) -> float:
    """Coefficient of variation (std / mean) of firing rates: 0 when all neurons fire alike."""
    mean = float(rates.mean())
    return float(rates.std()) / mean if mean > 0 else 0.0


def _measure(run_dir: Path, s: CompareSettings) -> dict[str, Any]:
    import torch

    from bdh.checkpoint import load_checkpoint
    from bdh.data import load_corpus
    from bdh.learning import prunable_parameters, weight_sparsity
    from bdh.registry import max_context

    model, tokenizer = load_checkpoint(run_dir, s.device)
    corpus, _ = load_corpus(s.data, tokenizer, 0.1)
    gen = torch.Generator().manual_seed(s.seed)
    x, _ = corpus.batch("val", min(8, s.batch_size), s.block_size, gen, s.device)
    zeros: dict[str, list[float]] = {}
    spreads: dict[str, list[float]] = {}

    def hook(key: str):
        def fn(module: torch.nn.Module, output: torch.Tensor) -> None:
            zeros.setdefault(key, []).append(float((output == 0).float().mean()))
            spreads.setdefault(key, []).append(rate_spread(firing_rates(output)))

        return fn

    # Neuron activity: the probe points the family declares (BDH/neuro: x, y; GPT: MLP hidden).
    handles = [
        h for key in model.sparsity_probes for h in model.probe_points[key].hook(model, hook(key))
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    activation = {k: sum(v) / len(v) for k, v in zeros.items()}
    state_bytes = {}
    for length in s.contexts:
        limit = max_context(model)
        if limit is not None and length > limit:
            state_bytes[str(length)] = None  # beyond the model's positions
            continue
        state = model.init_state(1)
        idx = torch.randint(0, tokenizer.vocab_size, (1, length), generator=gen).to(s.device)
        _, state = model.prefill(idx, state, all_logits=False)
        state_bytes[str(length)] = state.used_nbytes()
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "activation_sparsity": activation,
        "firing_rate_spread": {k: sum(v) / len(v) for k, v in spreads.items()},
        "weight_sparsity": weight_sparsity(prunable_parameters(model).values()),
        "state_bytes": state_bytes,
    }


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers of one trained run."""
    train_lines = [m for m in result["metrics"] if "loss" in m]
    evals = [m for m in result["metrics"] if "val_loss" in m]
    last = train_lines[-1] if train_lines else {}
    act = result["activation_sparsity"]
    spread = result.get("firing_rate_spread") or {}
    return {
        "name": result["name"],
        "study": result.get("study", "main"),
        "budget": result.get("budget", "tokens"),
        "seed": result.get("seed"),
        "parameters": result["parameters"],
        "precision": result.get("precision"),
        "final_val_loss": evals[-1]["val_loss"] if evals else None,
        "final_val_bpb": evals[-1]["val_bpb"] if evals else None,
        "final_train_loss": last.get("loss"),
        "tokens_per_s": last["tokens"] / last["elapsed_s"] if last.get("elapsed_s") else None,
        "train_time_s": last.get("elapsed_s"),
        "tokens": last.get("tokens"),
        "steps": last.get("step"),
        "peak_rss_mib": result["peak_rss_bytes"] / 2**20,
        "rss_growth_mib": (result["peak_rss_bytes"] - result["rss_before_training_bytes"]) / 2**20,
        "activation_sparsity": sum(act.values()) / len(act) if act else None,
        "firing_rate_spread": sum(spread.values()) / len(spread) if spread else None,
        "weight_sparsity": result["weight_sparsity"],
        "state_bytes": result["state_bytes"],
    }


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float | None]:
    """Mean and the half-width of its Student-t confidence interval (None for one value)."""
    from scipy.stats import t

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


MEANS = (
    "final_val_loss", "final_val_bpb", "final_train_loss", "tokens_per_s", "train_time_s",
    "tokens", "steps", "peak_rss_mib", "rss_growth_mib", "activation_sparsity",
    "firing_rate_spread", "weight_sparsity",
)  # fmt: skip


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows of one label and budget over seeds: means of `MEANS` (`<field>_ci`: the 95%
    t-interval's half-width), the first row's other fields, `seeds`: the seeds."""
    out = dict(rows[0])
    out["seeds"] = [r.get("seed") for r in rows]
    for key in MEANS:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key], out[f"{key}_ci"] = t_interval(values) if values else (None, None)
    return out


def group_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One aggregate per (study, name, budget), in first-seen order."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row.get("study", "main"), row["name"], row.get("budget", "tokens"))
        groups.setdefault(key, []).append(row)
    return [aggregate(g) for g in groups.values()]


def compute_floors(s: CompareSettings) -> dict[str, Any]:
    """The count models' losses on the whole validation split and on the sample the models
    are scored on (the first eval_tokens of val, as one stream)."""
    from bdh.baselines.ngram import ngram_floors, uniform_loss
    from bdh.data import load_corpus

    corpus, tokenizer = load_corpus(s.data, s.tokenizer, 0.1)
    windows = max(1, min((len(corpus.val) - 1) // s.block_size, s.eval_tokens // s.block_size))
    sample = corpus.val[: windows * s.block_size + 1]
    return {
        "uniform": uniform_loss(tokenizer.vocab_size),
        "validation_split": ngram_floors(corpus.train, corpus.val, tokenizer.vocab_size),
        "scored_sample": ngram_floors(corpus.train, sample, tokenizer.vocab_size),
        "scored_tokens": int(len(sample) - 1),
    }


def _reusable(old: dict[str, Any] | None, train_config: dict[str, Any], run_dir: Path) -> bool:
    """Whether a previous report's run can stand for a run with `train_config`."""
    return (
        old is not None
        and old.get("train_config") == train_config
        and (run_dir / "model.safetensors").is_file()
    )


def _run_dir(out: Path, label: str, budget: str, seed: int) -> Path:
    return out / "runs" / label / f"{budget}-seed{seed}"


def _earlier_report(path: Path) -> dict[str, Any]:
    """An earlier report.json; a damaged file is refused in one line."""
    try:
        report = json.loads(path.read_text())
        if not isinstance(report, dict) or not all(isinstance(r, dict) for r in report["runs"]):
            raise TypeError("not a report")
        return report
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(
            f"--reuse cannot read {path} ({type(err).__name__}); remove it or use --force"
        ) from None


def run_compare(settings: CompareSettings, force: bool = False) -> dict[str, Any]:
    """Train every run of `plan_runs` (one fresh process each), write the report, return its data.

    An existing non-empty OUT is refused unless `force` (then emptied first) or
    `settings.reuse`: OUT must then hold runs (OUT/runs; a report directory without them,
    such as a committed report, is refused), and a run in OUT/runs with the same training
    config as in the previous OUT/report.json is loaded instead of trained: its training
    metrics and peak memory come from that report, the post-training measurements are redone;
    the machine (its load at the start) and the wall time are the previous report's, plus
    the time of the runs trained now.
    """
    if settings.reuse and force:
        raise ConfigError("--reuse and --force contradict each other")
    out = Path(settings.out_dir)
    if settings.reuse:
        if out.is_dir() and any(out.iterdir()) and not (out / "runs").is_dir():
            raise ConfigError(
                f"output directory '{out}' holds no runs to reuse; use --force to replace it"
            )
        out.mkdir(parents=True, exist_ok=True)
    else:
        ReportDir(out, force)
    machine = machine_info()  # the load at the start: the machine may be shared
    previous: dict[str, Any] = {}
    earlier: dict[str, Any] = {}  # the previous report: its machine and training time carry over
    if settings.reuse and (out / "report.json").is_file():
        earlier = _earlier_report(out / "report.json")
        for r in earlier["runs"]:
            previous[r.get("key") or f"{r['name']}/{r['budget']}/seed{r['seed']}"] = r
    machine_block = earlier.get("machine") or {
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpus": multiprocessing.cpu_count(),
        "torch": machine["torch"],
        "threads": settings.threads,
        "load_average_at_start": machine["load_average"],
    }
    wall_time = earlier.get("wall_time_s", 0.0)  # of the runs trained, over invocations
    results = []
    ctx = multiprocessing.get_context("spawn")
    for run in plan_runs(settings):
        run_dir = _run_dir(out, run.label, run.budget, run.seed)
        cfg = json.loads(
            json.dumps(_train_config(settings, run.entry, run.seed, run.budget, run_dir).to_dict())
        )
        old = previous.get(run.key)
        tags = {
            "key": run.key,
            "study": run.study,
            "name": run.label,
            "seed": run.seed,
            "budget": run.budget,
        }
        if _reusable(old, cfg, run_dir):
            results.append({**old, **_measure(run_dir, settings), **tags, "reused": True})
            continue
        args = (asdict(settings), run.entry, run.seed, run.budget, str(run_dir))
        started = time.perf_counter()
        if settings.in_process:
            results.append({**_train_and_measure(*args), **tags})
        else:
            with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                results.append({**pool.submit(_train_and_measure, *args).result(), **tags})
        wall_time += time.perf_counter() - started
        # the runs so far, for --reuse should the comparison stop before its report
        partial = {"settings": asdict(settings), "machine": machine_block, "wall_time_s": wall_time}
        _write(out / "report.json", json.dumps({**partial, "runs": results}) + "\n")
    rows = [summarize(r) for r in results]
    groups = group_rows(rows)
    report = {
        "settings": asdict(settings),
        "machine": machine_block,
        "wall_time_s": wall_time,
        "floors": compute_floors(settings),
        "summary": [g for g in groups if g["study"] == "main" and g["budget"] == "tokens"],
        "groups": groups,
        "rows": rows,
        "runs": results,
    }
    report["findings"] = findings(report)
    _write(out / "report.json", json.dumps(report, indent=2) + "\n")
    plot_report(report, out)
    _write(out / "report.md", markdown_report(report))
    return report


def _write(path: Path, text: str) -> None:
    from bdh.checkpoint import atomic_write

    atomic_write(path, lambda tmp: tmp.write_text(text))


def _group(report: dict[str, Any], name: str, budget: str = "tokens") -> dict[str, Any] | None:
    for g in report.get("groups") or report["summary"]:
        if g["name"] == name and g.get("budget", "tokens") == budget:
            return g
    return None


def pruning_curve(report: dict[str, Any]) -> list[dict[str, Any]]:
    """(threshold, final weight sparsity, final val loss) of each pruning run, by sparsity."""
    points = []
    for run, row in zip(report.get("runs", []), report.get("rows", []), strict=False):
        if row.get("study") == "pruning":
            threshold = run["train_config"]["prune_threshold"]
            points.append(
                {
                    "threshold": threshold,
                    "weight_sparsity": row["weight_sparsity"],
                    "val_loss": row["final_val_loss"],
                }
            )
    return sorted(points, key=lambda p: p["weight_sparsity"])


def degradation_sparsity(
    points: list[dict[str, Any]], base: float, tolerance: float
) -> dict[str, Any]:
    """The weight sparsity at which the val loss first exceeds base + tolerance, linearly
    interpolated between the measured points (the unpruned model at sparsity 0 and loss
    `base` first); `reached` False when no point exceeds it (then: the largest sparsity)."""
    limit = base + tolerance
    previous = (0.0, base)
    for p in points:
        if p["val_loss"] > limit:
            (s0, l0), (s1, l1) = previous, (p["weight_sparsity"], p["val_loss"])
            at = s0 + (s1 - s0) * (limit - l0) / (l1 - l0) if l1 != l0 else s1
            return {"reached": True, "sparsity": at, "limit": limit}
        previous = (p["weight_sparsity"], p["val_loss"])
    return {"reached": False, "sparsity": previous[0], "limit": limit}


def findings(report: dict[str, Any]) -> dict[str, Any]:
    """The figures the report's answers rest on."""
    out: dict[str, Any] = {}
    for budget in BUDGETS:
        back, hyb = _group(report, "bdh-backprop", budget), _group(report, "bdh-hybrid", budget)
        if (
            back
            and hyb
            and back["final_val_loss"] is not None
            and hyb["final_val_loss"] is not None
        ):
            out[f"hybrid_minus_backprop_{budget}"] = hyb["final_val_loss"] - back["final_val_loss"]
    sweep = [g for g in report.get("groups", []) if g["study"] == "hybrid-sweep"]
    back = _group(report, "bdh-backprop")
    if sweep and back:
        best = min(sweep, key=lambda g: g["final_val_loss"])
        out["hybrid_sweep_best"] = {"name": best["name"], "val_loss": best["final_val_loss"],
                                    "ci": best["final_val_loss_ci"], "minus_backprop": best["final_val_loss"] - back["final_val_loss"]}  # fmt: skip
    points = pruning_curve(report)
    base_rows = [
        r for r in report.get("rows", [])
        if r["name"] == "bdh-backprop" and r["budget"] == "tokens" and r["seed"] == report["settings"]["seed"]
    ]  # fmt: skip
    if points and base_rows:
        out["pruning"] = {
            "base_val_loss": base_rows[0]["final_val_loss"],
            "points": points,
            **degradation_sparsity(points, base_rows[0]["final_val_loss"], PRUNE_TOLERANCE),
        }
    homeo = _group(report, "bdh-backprop-homeostasis")
    if homeo and back:
        out["homeostasis"] = {
            key: {
                "off": back[key],
                "off_ci": back[f"{key}_ci"],
                "on": homeo[key],
                "on_ci": homeo[f"{key}_ci"],
            }
            for key in ("firing_rate_spread", "final_val_loss", "activation_sparsity")
        }
    return out


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _pm(row: dict[str, Any], key: str, spec: str = ".3f") -> str:
    """mean ± the 95% interval's half-width (just the mean for one seed)."""
    ci = row.get(f"{key}_ci")
    return _fmt(row.get(key), spec) + ("" if ci is None else " ± " + format(ci, spec))


def regenerate_command(s: dict[str, Any]) -> str:
    """The `bdh compare` command line that reproduces a report with these settings."""
    if s.get("in_process"):
        return f"bdh compare --smoke --out {s['out_dir']} --force"
    parts = [
        "nice -n 10 bdh compare", f"--out {s['out_dir']} --force", f"--models {','.join(s['entries'])}",
        f"--steps {s['steps']} --batch-size {s['batch_size']} --block-size {s['block_size']}",
        f"--lr {s['lr']:g} --hebbian-lr {s['hebbian_lr']:g} --seed {s['seed']} --seeds {s.get('seeds', 1)}",
        f"--eval-every {s['eval_every']} --eval-tokens {s['eval_tokens']}",
        f"--contexts {','.join(str(c) for c in s['contexts'])}",
    ]  # fmt: skip
    if s.get("wall_budget_s"):
        parts.append(f"--wall-budget {s['wall_budget_s']:g}")
    if s.get("hybrid_lrs"):
        parts.append("--hybrid-lrs " + ",".join(f"{v:g}" for v in s["hybrid_lrs"]))
    if s.get("prune_thresholds"):
        parts.append("--prune-thresholds " + ",".join(f"{v:g}" for v in s["prune_thresholds"]))
    if s.get("homeostasis"):
        parts.append("--homeostasis")
    if s.get("threads"):
        parts.append(f"--threads {s['threads']}")
    if s.get("data"):
        parts.append(f"--data {s['data']}")
    if s.get("tokenizer", "byte") != "byte":
        parts.append(f"--tokenizer {s['tokenizer']}")
    return " ".join(parts)


def _table(rows: list[dict[str, Any]], floors: dict[str, float] | None) -> list[str]:
    lines = [
        "| model | seeds | params | precision | val loss (nats/byte) | val bits/byte | tokens | tokens/s | peak RSS (MiB) | activation sparsity | weight sparsity |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['name']} | {len(r.get('seeds') or [r.get('seed')])} | {r['parameters']:,} "
            f"| {r.get('precision') or 'n/a'} | {_pm(r, 'final_val_loss')} | {_pm(r, 'final_val_bpb')} "
            f"| {_fmt(r.get('tokens'), ',.0f')} | {_fmt(r['tokens_per_s'], ',.0f')} "
            f"| {_fmt(r['peak_rss_mib'], '.0f')} | {_fmt(r['activation_sparsity'])} "
            f"| {_fmt(r['weight_sparsity'])} |"
        )
    for name, loss in (floors or {}).items():
        lines.append(
            f"| *{name} count model* | | | | {loss:.3f} | {loss / math.log(2):.3f} | | | | | |"
        )
    return lines


def markdown_report(report: dict[str, Any]) -> str:
    s = report["settings"]
    groups = report.get("groups") or report["summary"]
    rows = {r["name"]: r for r in report["summary"]}
    floors = report.get("floors") or {}
    scored = floors.get("scored_sample")
    tokens = s["steps"] * s["batch_size"] * s["block_size"]
    machine = report["machine"]
    load = machine.get("load_average_at_start")
    lines = [
        "# Model comparison",
        "",
        f"Same data ({s['data'] or 'bundled tiny Shakespeare'}, {s['tokenizer']} tokenizer), "
        f"{s.get('seeds', 1)} seed(s) per entry from {s['seed']}, mean ± the 95% t-interval over seeds. "
        f"Token budget: {s['steps']} steps of {s['batch_size']} x {s['block_size']} tokens ({tokens:,} tokens) "
        f"per model" + (f"; wall budget: {s['wall_budget_s']:g} s of training per model" if s.get("wall_budget_s") else "")
        + f". lr {s['lr']}, Hebbian (Oja) lr {s['hebbian_lr']} unless an entry sets its own; validation loss on the "
        f"first {s['eval_tokens']:,} validation tokens (windows of {s['block_size']}). Machine: {machine['processor']}, "
        f"{machine['cpus']} CPUs, torch {machine['torch']}"
        + (f", {s['threads']} thread(s) per run" if s.get("threads") else "")
        + (f", shared: load average {load[0]:.1f} at the start" if load else "")
        + f". Wall time of the whole comparison: {_fmt(report.get('wall_time_s'), '.0f')} s.",
        "",
        f"Regenerate: `{regenerate_command(s)}`",
        "",
    ]  # fmt: skip
    if floors:
        whole = floors["validation_split"]
        lines += [
            "## Floors: count models on the same split",
            "",
            "Add-0.1-smoothed n-gram models counted on the training split (`bdh.baselines.ngram`); "
            f"uniform: {floors['uniform']:.3f} nats/byte.",
            "",
            "| model | whole validation split (last 10%) | scored sample (" + f"{floors['scored_tokens']:,} tokens) |",
            "|---|---:|---:|",
            *[f"| {k} | {whole[k]:.3f} | {scored[k]:.3f} |" for k in whole],
            "",
        ]  # fmt: skip
    lines += ["## Same tokens", "", *_table(report["summary"], scored), ""]
    wall = [g for g in groups if g.get("study") == "main" and g.get("budget") == "wall"]
    if wall:
        lines += [
            "## Same training wall time",
            "",
            f"Every run trains for {s['wall_budget_s']:g} s (evaluation excluded), its schedule "
            "stretched over that time; the tokens column is what it read in that time.",
            "",
            *_table(wall, scored),
            "",
        ]
    present = [(title, rows[name]) for title, name in SEED002_COLUMNS if name in rows]
    if present:
        base = present[0][1]["tokens_per_s"] if present[0][0].startswith("Standard") else None
        lines += [
            "## Seed 002's comparison table, measured",
            "",
            "| Metric | " + " | ".join(title for title, _ in present) + " |",
            "|---|" + "---:|" * len(present),
            f"| Val loss @ {s['steps']} steps | " + " | ".join(_pm(r, "final_val_loss") for _, r in present) + " |",
            "| Training speed (vs standard) | "
            + " | ".join(
                _fmt(r["tokens_per_s"] / base if base and r["tokens_per_s"] else None, ".2f") + "x"
                for _, r in present
            )
            + " |",
            "| Memory usage (peak RSS) | " + " | ".join(_fmt(r["peak_rss_mib"], ".0f") + " MiB" for _, r in present) + " |",
            "| Activation sparsity | " + " | ".join(_fmt(r["activation_sparsity"], ".1%") for _, r in present) + " |",
            "| Weight sparsity | " + " | ".join(_fmt(r["weight_sparsity"], ".1%") for _, r in present) + " |",
            "",
        ]  # fmt: skip
    lines += _studies(report)
    if report.get("groups"):
        lines += research_answers(report)
    lines += [
        "## Inference state per sequence vs context length (bytes)",
        "",
        "BDH and the neuro model keep a fixed-size state; GPT's KV cache grows with the context "
        "and cannot exceed its block size (n/a).",
        "",
        "| model | " + " | ".join(str(c) for c in s["contexts"]) + " |",
        "|---|" + "---:|" * len(s["contexts"]),
    ]
    for r in report["summary"]:
        cells = [_fmt(r["state_bytes"][str(c)], ",d") for c in s["contexts"]]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Activation sparsity: fraction of exactly-zero neuron activations on one validation batch "
        "(x and y for BDH and neuro, the GELU hidden layer for GPT). Firing-rate spread: the "
        "coefficient of variation (std / mean) of the per-neuron firing rates on that batch. Weight "
        "sparsity: fraction of exactly-zero entries of the synapse matrices "
        "(`bdh.learning.prunable_parameters`). Peak RSS is the training process's own peak "
        "resident memory (Python and torch included).",
        "",
        "Plots: " + ", ".join(f"`{name}`" for name in _plot_names(report)) + ".",
        "",
    ]
    return "\n".join(lines)


def _studies(report: dict[str, Any]) -> list[str]:
    """The sweep, pruning and homeostasis sections (where the report has those runs)."""
    groups = report.get("groups") or []
    found = report.get("findings") or {}
    lines: list[str] = []
    sweep = [g for g in groups if g.get("study") == "hybrid-sweep"]
    back = _group(report, "bdh-backprop")
    if sweep and back:
        lines += [
            "## Hybrid: backprop + Oja, by the Oja rate",
            "",
            "BDH trained by backprop with Oja's rule on the encoders after every step (no pruning, "
            "no homeostasis), against plain backprop on the same tokens and seeds.",
            "",
            "| Oja rate | val loss | minus backprop |",
            "|---|---:|---:|",
            f"| 0 (bdh-backprop) | {_pm(back, 'final_val_loss')} | 0 |",
        ]
        for g in sweep:
            delta = g["final_val_loss"] - back["final_val_loss"]
            lines.append(
                f"| {g['name'].removeprefix('hybrid-oja-')} | {_pm(g, 'final_val_loss')} | {delta:+.3f} |"
            )
        lines.append("")
    if "pruning" in found:
        p = found["pruning"]
        at = (
            f"the loss crosses +{PRUNE_TOLERANCE} nats (≤ {p['limit']:.3f}) at {p['sparsity']:.1%} weight sparsity"
            if p["reached"]
            else f"the loss stays within +{PRUNE_TOLERANCE} nats up to {p['sparsity']:.1%}, the largest sparsity measured"
        )
        lines += [
            "## Pruning curve",
            "",
            f"BDH backprop pruned every {PRUNE_EVERY} steps at a magnitude threshold (one seed, "
            f"{report['settings']['seed']}); unpruned: {p['base_val_loss']:.3f}. {at.capitalize()}.",
            "",
            "| threshold | weight sparsity | val loss |",
            "|---:|---:|---:|",
            *[f"| {q['threshold']:g} | {q['weight_sparsity']:.1%} | {q['val_loss']:.3f} |" for q in p["points"]],
            "",
        ]  # fmt: skip
    if "homeostasis" in found:
        h = found["homeostasis"]
        lines += [
            "## Homeostasis",
            "",
            "BDH backprop with and without homeostatic scaling of the encoders.",
            "",
            "| | without | with |",
            "|---|---:|---:|",
        ]
        for key, title in (
            ("firing_rate_spread", "firing-rate spread (std / mean)"),
            ("final_val_loss", "val loss"),
            ("activation_sparsity", "activation sparsity"),
        ):
            pair = h[key]
            off = _fmt(pair["off"]) + ("" if pair["off_ci"] is None else f" ± {pair['off_ci']:.3f}")
            on = _fmt(pair["on"]) + ("" if pair["on_ci"] is None else f" ± {pair['on_ci']:.3f}")
            lines.append(f"| {title} | {off} | {on} |")
        lines.append("")
    return lines


def _loss(row: dict[str, Any] | None) -> str:
    return "n/a" if row is None else _pm(row, "final_val_loss")


def _compared(a: dict[str, Any], b: dict[str, Any]) -> str:
    """ "lower", "higher" or "indistinguishable" for a's loss against b's: whether their
    95% intervals are apart."""
    la, lb = a["final_val_loss"], b["final_val_loss"]
    ca, cb = a.get("final_val_loss_ci") or 0.0, b.get("final_val_loss_ci") or 0.0
    if la + ca < lb - cb:
        return "lower"
    if la - ca > lb + cb:
        return "higher"
    return "indistinguishable (overlapping 95% intervals)"


def research_answers(report: dict[str, Any]) -> list[str]:
    """Seed 002's five research questions, answered from the report's figures."""
    s = report["settings"]
    found = report.get("findings") or {}
    scored = (report.get("floors") or {}).get("scored_sample") or {}
    back, hyb, heb = (_group(report, n) for n in ("bdh-backprop", "bdh-hybrid", "bdh-hebbian"))
    gpt = _group(report, "gpt-backprop")
    tokens = s["steps"] * s["batch_size"] * s["block_size"]
    lines = ["## Seed 002's research questions, from these data", ""]

    answer = [
        f"1. **Learning efficiency** (does Hebbian learning improve sample efficiency?). At {tokens:,} tokens:"
    ]
    if heb and back:
        floors = ", ".join(f"{k} {v:.3f}" for k, v in scored.items())
        answer.append(
            f"Hebbian-only BDH (local rules, no gradient) reaches {_loss(heb)} nats/byte, backprop BDH "
            f"{_loss(back)}; the count models on the same sample: {floors}. Local rules alone are "
            f"{'below' if scored and heb['final_val_loss'] < scored.get('unigram', 0) else 'not below'} the unigram floor "
            f"and {'below' if scored and heb['final_val_loss'] <= scored.get('bigram', 0) else 'above'} the bigram floor: "
            "per token they learn far less than backprop (what was tried on the way: docs/variants.md, "
            "Learning rules)."
        )
    if "hybrid_sweep_best" in found:
        best = found["hybrid_sweep_best"]
        answer.append(
            f"Adding Oja to backprop at the best swept rate ({best['name'].removeprefix('hybrid-oja-')}) changes the loss by "
            f"{best['minus_backprop']:+.3f} nats against backprop alone."
        )
    lines += [" ".join(answer), ""]

    rows = [r for r in (gpt, back, hyb, heb) if r and r.get("final_train_loss") is not None]
    if rows:
        gaps = ", ".join(
            f"{r['name']} {r['final_val_loss'] - r['final_train_loss']:+.3f}" for r in rows
        )
        widest = max(rows, key=lambda r: r["final_val_loss"] - r["final_train_loss"])
        gap = widest["final_val_loss"] - widest["final_train_loss"]
        text = (
            "2. **Generalization** (do biological constraints help or hurt?). Validation minus the last "
            f"logged training loss (mean over seeds of one batch each): {gaps}. "
            + (
                f"Every gap is under {GAP_NOISE} nats, so at this budget none of the rules changes "
                "generalization measurably; they change how low the loss gets."
                if abs(gap) < GAP_NOISE
                else f"The widest gap is {widest['name']}'s ({gap:+.3f})."
            )
        )
        if "pruning" in found:
            p = found["pruning"]
            text += (
                f" Pruning costs at most {PRUNE_TOLERANCE} nats up to {p['sparsity']:.1%} weight sparsity"
                + (
                    " (where the loss crosses that line)."
                    if p["reached"]
                    else " (the largest measured; it never crossed)."
                )
            )
        lines += [text, ""]

    text = "3. **Sparsity** (learned vs architectural). "
    if back and gpt:
        text += (
            f"BDH's activations are sparse by construction (ReLU after the encoders): {back['activation_sparsity']:.1%} "
            f"exact zeros under backprop against {gpt['activation_sparsity']:.1%} in the GELU Transformer"
            + (f", {heb['activation_sparsity']:.1%} under the Hebbian rules" if heb else "")
            + ". "
        )
    if "pruning" in found:
        p = found["pruning"]
        text += (
            f"Learned weight sparsity from magnitude pruning: {p['sparsity']:.1%} at the "
            f"+{PRUNE_TOLERANCE}-nat line. "
        )
    text += "No mixture-of-experts model was trained here, so the comparison with MoE routing is not measured."
    lines += [text, ""]

    text = (
        "4. **Interpretability**. Not measured by this comparison: it records sparsity and the spread of "
        "per-neuron firing rates only (`bdh analyze` holds the monosemanticity and neuron-graph analyses, "
        "docs/analysis.md)."
    )
    if "homeostasis" in found:
        h = found["homeostasis"]["firing_rate_spread"]
        text += (
            f" Homeostatic scaling moves the firing-rate spread (std / mean over neurons) from {h['off']:.3f} "
            f"to {h['on']:.3f}: {'more even' if h['on'] < h['off'] else 'not more even'} firing."
        )
    lines += [text, ""]

    answer = [
        "5. **Hybrid benefits** (does combining backprop and Hebbian outperform either alone?)."
    ]
    for budget in BUDGETS:
        b, h, e = (_group(report, n, budget) for n in ("bdh-backprop", "bdh-hybrid", "bdh-hebbian"))
        if b and h:
            what = (
                "same tokens"
                if budget == "tokens"
                else f"same {s.get('wall_budget_s') or 0:g} s of training"
            )
            answer.append(
                f"At the {what}: hybrid {_loss(h)} against backprop {_loss(b)}, {_compared(h, b)}"
                + (f"; Hebbian-only {_loss(e)}." if e else ".")
            )
    if "hybrid_sweep_best" in found:
        sweep = [g for g in report.get("groups", []) if g["study"] == "hybrid-sweep"]
        verdicts = (
            ", ".join(
                f"{g['name'].removeprefix('hybrid-oja-')}: {_compared(g, back)}" for g in sweep
            )
            if back
            else ""
        )
        answer.append(f"Over the Oja-rate sweep, hybrid against backprop: {verdicts}.")
    lines += [" ".join(answer), ""]
    return lines


def _plot_names(report: dict[str, Any]) -> list[str]:
    names = ["val_loss.png", "throughput_memory.png", "sparsity.png", "state_memory.png"]
    found = report.get("findings") or {}
    if any(g.get("study") == "hybrid-sweep" for g in report.get("groups") or []):
        names.append("hybrid_sweep.png")
    if "pruning" in found:
        names.append("pruning.png")
    if "homeostasis" in found:
        names.append("homeostasis.png")
    return names


def _mean_curve(runs: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """Steps and the mean of `key` over runs, at the steps every run recorded."""
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for m in run["metrics"]:
            if key in m:
                by_step.setdefault(m["step"], []).append(m[key])
    steps = sorted(k for k, v in by_step.items() if len(v) == len(runs))
    return steps, [sum(by_step[k]) / len(by_step[k]) for k in steps]


def plot_report(report: dict[str, Any], out: Path) -> None:
    """Write the PNG plots of a report into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["settings"]
    per_step = s["batch_size"] * s["block_size"]
    summary = report["summary"]
    names = [r["name"] for r in summary]
    scored = (report.get("floors") or {}).get("scored_sample") or {}

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        runs = [
            r for r in report["runs"]
            if r["name"] == name and r.get("study", "main") == "main" and r.get("budget", "tokens") == "tokens"
        ]  # fmt: skip
        steps, losses = _mean_curve(runs, "val_loss")
        ax.plot(
            [k * per_step for k in steps],
            losses,
            marker="o",
            ms=3,
            label=f"{name} (mean of {len(runs)})",
        )
    for i, (floor, loss) in enumerate(scored.items()):
        ax.axhline(
            loss, color="gray", ls=("--", "-.", ":")[i % 3], lw=1, label=f"{floor} floor {loss:.2f}"
        )
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_ylim(top=min(6.0, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "val_loss.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].bar(names, [r["tokens_per_s"] or 0 for r in summary])
    axes[0].set_ylabel("training tokens/s")
    axes[1].bar(names, [r["peak_rss_mib"] for r in summary])
    axes[1].set_ylabel("peak RSS (MiB)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / "throughput_memory.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.4
    xs = range(len(names))
    ax.bar(
        [x - width / 2 for x in xs],
        [r["activation_sparsity"] or 0 for r in summary],
        width,
        label="activation",
    )
    ax.bar(
        [x + width / 2 for x in xs], [r["weight_sparsity"] for r in summary], width, label="weight"
    )
    ax.set_xticks(list(xs), names, rotation=30)
    ax.set_ylabel("fraction of exact zeros")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sparsity.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in summary:
        points = [(int(c), b) for c, b in r["state_bytes"].items() if b is not None]
        ax.plot([c for c, _ in points], [b / 1024 for _, b in points], marker="o", label=r["name"])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("inference state per sequence (KiB)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "state_memory.png", dpi=120)
    plt.close(fig)
    _plot_studies(report, out, plt)


def _plot_studies(report: dict[str, Any], out: Path, plt: Any) -> None:
    found = report.get("findings") or {}
    groups = report.get("groups") or []
    sweep = [g for g in groups if g.get("study") == "hybrid-sweep"]
    back = _group(report, "bdh-backprop")
    if sweep and back:
        fig, ax = plt.subplots(figsize=(6, 4))
        rates = [float(g["name"].removeprefix("hybrid-oja-")) for g in sweep]
        ax.errorbar(rates, [g["final_val_loss"] for g in sweep], yerr=[g["final_val_loss_ci"] or 0 for g in sweep],
                    marker="o", capsize=3, label="hybrid (backprop + Oja)")  # fmt: skip
        ax.axhline(back["final_val_loss"], color="k", lw=1, label="backprop")
        if back["final_val_loss_ci"]:
            lo, hi = (
                back["final_val_loss"] - back["final_val_loss_ci"],
                back["final_val_loss"] + back["final_val_loss_ci"],
            )
            ax.axhspan(lo, hi, color="k", alpha=0.1)
        ax.set_xscale("log")
        ax.set_xlabel("Oja rate (hebbian_lr)")
        ax.set_ylabel("validation loss (nats/byte)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "hybrid_sweep.png", dpi=120)
        plt.close(fig)
    if "pruning" in found:
        p = found["pruning"]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for run in report["runs"]:
            if run.get("study") == "pruning":
                steps, sparsity = _mean_curve([run], "weight_sparsity")
                axes[0].plot(
                    steps, sparsity, label=f"threshold {run['train_config']['prune_threshold']:g}"
                )
        axes[0].set_xlabel("step")
        axes[0].set_ylabel("weight sparsity")
        axes[0].grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        pts = p["points"]
        axes[1].plot(
            [0.0] + [q["weight_sparsity"] for q in pts],
            [p["base_val_loss"]] + [q["val_loss"] for q in pts],
            marker="o",
        )
        axes[1].axhline(p["limit"], color="r", ls="--", lw=1, label=f"unpruned + {PRUNE_TOLERANCE}")
        if p["reached"]:
            axes[1].axvline(p["sparsity"], color="r", ls=":", lw=1)
        axes[1].set_xlabel("final weight sparsity")
        axes[1].set_ylabel("validation loss (nats/byte)")
        axes[1].grid(alpha=0.3)
        axes[1].legend()
        fig.tight_layout()
        fig.savefig(out / "pruning.png", dpi=120)
        plt.close(fig)
    if "homeostasis" in found:
        h = found["homeostasis"]
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
        for ax, key, title in ((axes[0], "firing_rate_spread", "firing-rate spread (std / mean)"),
                               (axes[1], "final_val_loss", "validation loss")):  # fmt: skip
            pair = h[key]
            ax.bar(
                ["without", "with"],
                [pair["off"], pair["on"]],
                yerr=[pair["off_ci"] or 0, pair["on_ci"] or 0],
                capsize=4,
            )
            ax.set_title(title, fontsize=9)
        fig.suptitle("BDH backprop, homeostatic scaling", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "homeostasis.png", dpi=120)
        plt.close(fig)
