"""`bdh compare`: train several models on the same data, token budget and seed; report.

Each entry is trained by `bdh.train.train` in a fresh process, so its peak resident
memory is its own. After training, every model is measured the same way: activation
sparsity on a fixed validation batch, weight sparsity of its synapse matrices, and the
bytes of its inference state (or KV cache) after prefilling contexts of several lengths.
Writes `report.md`, `report.json` and PNG plots into the output directory.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bdh.errors import ConfigError
from bdh.experiments.report import ReportDir, cpu_name


@dataclass
class Entry:
    """One model to train: a name for the report and its training options."""

    name: str
    model: str
    preset: str = "tiny"
    learning_mode: str = "backprop"
    options: dict[str, Any] = field(default_factory=dict)  # other TrainConfig fields


# The default line-up: seed 002's three columns (standard backprop, BDH hybrid, BDH
# Hebbian-only) plus BDH with backprop and the neuro model.
DEFAULT_ENTRIES: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("gpt-backprop", "gpt"),
        Entry("bdh-backprop", "bdh"),
        Entry(
            "bdh-hybrid", "bdh", learning_mode="hybrid",
            options=dict(prune_every=50, prune_threshold=0.005, homeostatic_scaling=True),
        ),
        Entry("bdh-hebbian", "bdh", learning_mode="hebbian", options=dict(prune_every=50, prune_threshold=0.005)),
        Entry("neuro-backprop", "neuro", preset="small", options=dict(model_overrides={"bptt": 64})),
    )
}  # fmt: skip

SEED002_COLUMNS = (
    ("Standard Transformer (Backprop)", "gpt-backprop"),
    ("BDH (Backprop)", "bdh-backprop"),
    ("BDH (Hybrid)", "bdh-hybrid"),
    ("BDH (Hebbian Only)", "bdh-hebbian"),
)


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
    data: str | None = None
    tokenizer: str = "byte"
    eval_every: int = 25
    eval_tokens: int = 16384
    device: str = "cpu"
    threads: int | None = None
    contexts: list[int] = field(default_factory=lambda: [64, 256, 1024, 4096])
    reuse: bool = False  # load runs already trained with the same config (see run_compare)

    def __post_init__(self) -> None:
        unknown = [e for e in self.entries if e not in DEFAULT_ENTRIES]
        if unknown or not self.entries:
            raise ConfigError(
                f"unknown model entries {unknown}; choose from: {', '.join(DEFAULT_ENTRIES)}"
            )
        if min(self.steps, self.batch_size, self.block_size, self.eval_every, self.eval_tokens) < 1:
            raise ConfigError(
                "steps, batch size, block size, eval every and eval tokens must be >= 1"
            )
        if not self.contexts or min(self.contexts) < 1:
            raise ConfigError("context lengths must be positive")


def _peak_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _train_config(s: CompareSettings, entry: dict[str, Any]) -> Any:
    """The `bdh.train.TrainConfig` of one entry under these settings."""
    from bdh.train import TrainConfig

    options = dict(entry["options"])
    if entry["learning_mode"] != "backprop":
        options.setdefault("hebbian_lr", s.hebbian_lr)
    return TrainConfig(
        model=entry["model"], preset=entry["preset"], learning_mode=entry["learning_mode"],
        data=s.data, tokenizer=s.tokenizer, steps=s.steps, batch_size=s.batch_size,
        block_size=s.block_size, lr=s.lr, seed=s.seed, eval_every=s.eval_every,
        eval_tokens=s.eval_tokens, log_every=max(1, min(10, s.steps // 10)),
        checkpoint_every=s.steps, keep_last=1, progress=False, device=s.device,
        out_dir=str(Path(s.out_dir) / "runs" / entry["name"]), **options,
    )  # fmt: skip


def _train_and_measure(settings: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
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
    cfg = _train_config(s, entry)
    rss_before = _peak_rss_bytes()
    run_dir = train(cfg, force=True)
    rss_peak = _peak_rss_bytes()
    lines = read_metrics(run_dir / METRICS_FILE)
    result = {
        "name": entry["name"],
        "train_config": cfg.to_dict(),
        "precision": resolve_precision(cfg.precision, resolve_device(cfg.device), cfg.model),
        "metrics": lines,
        "peak_rss_bytes": rss_peak,
        "rss_before_training_bytes": rss_before,
    }
    result.update(_measure(run_dir, s))
    return result


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

    def hook(key: str):
        def fn(module: torch.nn.Module, output: torch.Tensor) -> None:
            zeros.setdefault(key, []).append(float((output == 0).float().mean()))

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
        "weight_sparsity": weight_sparsity(prunable_parameters(model).values()),
        "state_bytes": state_bytes,
    }


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers of one trained entry."""
    train_lines = [m for m in result["metrics"] if "loss" in m]
    evals = [m for m in result["metrics"] if "val_loss" in m]
    last = train_lines[-1] if train_lines else {}
    act = result["activation_sparsity"]
    return {
        "name": result["name"],
        "parameters": result["parameters"],
        "precision": result.get("precision"),
        "final_val_loss": evals[-1]["val_loss"] if evals else None,
        "final_val_bpb": evals[-1]["val_bpb"] if evals else None,
        "final_train_loss": last.get("loss"),
        "tokens_per_s": last["tokens"] / last["elapsed_s"] if last.get("elapsed_s") else None,
        "train_time_s": last.get("elapsed_s"),
        "tokens": last.get("tokens"),
        "peak_rss_mib": result["peak_rss_bytes"] / 2**20,
        "rss_growth_mib": (result["peak_rss_bytes"] - result["rss_before_training_bytes"]) / 2**20,
        "activation_sparsity": sum(act.values()) / len(act) if act else None,
        "weight_sparsity": result["weight_sparsity"],
        "state_bytes": result["state_bytes"],
    }


def _reusable(old: dict[str, Any] | None, train_config: dict[str, Any], run_dir: Path) -> bool:
    """Whether a previous report's run can stand for a run with `train_config`."""
    return (
        old is not None
        and old.get("train_config") == train_config
        and (run_dir / "model.safetensors").is_file()
    )


def _previous_runs(path: Path) -> dict[str, dict[str, Any]]:
    """The runs of an earlier report.json by name; a damaged file is refused in one line."""
    try:
        runs = json.loads(path.read_text())["runs"]
        return {r["name"]: r for r in runs if isinstance(r, dict)}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(
            f"--reuse cannot read {path} ({type(err).__name__}); remove it or use --force"
        ) from None


def run_compare(settings: CompareSettings, force: bool = False) -> dict[str, Any]:
    """Train every entry (one fresh process each), write the report, return its data.

    An existing non-empty OUT is refused unless `force` (then emptied first) or
    `settings.reuse`: an entry whose run in OUT/runs has the same training config as
    in the previous OUT/report.json is then loaded instead of trained: its training
    metrics and peak memory come from that report, the post-training measurements are redone.
    """
    import torch

    if settings.reuse and force:
        raise ConfigError("--reuse and --force contradict each other")
    out = Path(settings.out_dir)
    if settings.reuse:
        out.mkdir(parents=True, exist_ok=True)
    else:
        ReportDir(out, force)
    previous: dict[str, Any] = {}
    if settings.reuse and (out / "report.json").is_file():
        previous = _previous_runs(out / "report.json")
    results = []
    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    for name in settings.entries:
        entry = asdict(DEFAULT_ENTRIES[name])
        cfg = json.loads(json.dumps(_train_config(settings, entry).to_dict()))
        old = previous.get(name)
        run_dir = out / "runs" / name
        if _reusable(old, cfg, run_dir):
            results.append({**old, **_measure(run_dir, settings), "reused": True})
            continue
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            results.append(pool.submit(_train_and_measure, asdict(settings), entry).result())
    report = {
        "settings": asdict(settings),
        "machine": {
            "platform": platform.platform(),
            "processor": cpu_name(),
            "cpus": multiprocessing.cpu_count(),
            "torch": torch.__version__,
        },
        "wall_time_s": time.perf_counter() - started,
        "summary": [summarize(r) for r in results],
        "runs": results,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_report(report, out)
    (out / "report.md").write_text(markdown_report(report))
    return report


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def markdown_report(report: dict[str, Any]) -> str:
    s = report["settings"]
    rows = {r["name"]: r for r in report["summary"]}
    tokens = s["steps"] * s["batch_size"] * s["block_size"]
    lines = [
        "# Model comparison",
        "",
        f"Same data ({s['data'] or 'bundled tiny Shakespeare'}, {s['tokenizer']} tokenizer), seed {s['seed']}, "
        f"{s['steps']} steps of {s['batch_size']} x {s['block_size']} tokens ({tokens:,} tokens) per model, "
        f"lr {s['lr']}, Hebbian lr {s['hebbian_lr']}; validation loss on the first {s['eval_tokens']:,} "
        f"validation tokens. Machine: {report['machine']['processor']}, {report['machine']['cpus']} CPUs, "
        f"torch {report['machine']['torch']}. Wall time of the whole comparison: "
        f"{_fmt(report.get('wall_time_s'), '.0f')} s.",
        "",
        "| model | params | precision | val loss | val bits/byte | tokens/s | peak RSS (MiB) | activation sparsity | weight sparsity |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["summary"]:
        lines.append(
            f"| {r['name']} | {r['parameters']:,} | {r.get('precision') or 'n/a'} "
            f"| {_fmt(r['final_val_loss'])} | {_fmt(r['final_val_bpb'])} "
            f"| {_fmt(r['tokens_per_s'], ',.0f')} | {_fmt(r['peak_rss_mib'], '.0f')} "
            f"| {_fmt(r['activation_sparsity'])} | {_fmt(r['weight_sparsity'])} |"
        )
    present = [(title, rows[name]) for title, name in SEED002_COLUMNS if name in rows]
    if present:
        base = present[0][1]["tokens_per_s"] if present[0][0].startswith("Standard") else None
        lines += [
            "",
            "## Seed 002's comparison table, measured",
            "",
            "| Metric | " + " | ".join(title for title, _ in present) + " |",
            "|---|" + "---:|" * len(present),
            f"| Val loss @ {s['steps']} steps | "
            + " | ".join(_fmt(r["final_val_loss"]) for _, r in present)
            + " |",
            "| Training speed (vs standard) | "
            + " | ".join(
                _fmt(r["tokens_per_s"] / base if base and r["tokens_per_s"] else None, ".2f") + "x"
                for _, r in present
            )
            + " |",
            "| Memory usage (peak RSS) | "
            + " | ".join(_fmt(r["peak_rss_mib"], ".0f") + " MiB" for _, r in present)
            + " |",
            "| Activation sparsity | "
            + " | ".join(_fmt(r["activation_sparsity"], ".1%") for _, r in present)
            + " |",
            "| Weight sparsity | "
            + " | ".join(_fmt(r["weight_sparsity"], ".1%") for _, r in present)
            + " |",
        ]
    lines += [
        "",
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
        "(x and y for BDH and neuro, the GELU hidden layer for GPT). Weight sparsity: fraction of "
        "exactly-zero entries of the synapse matrices (`bdh.learning.prunable_parameters`). Peak RSS "
        "is the training process's own peak resident memory (Python and torch included).",
        "",
        "Plots: `val_loss.png`, `throughput_memory.png`, `sparsity.png`, `state_memory.png`.",
        "",
    ]
    return "\n".join(lines)


def plot_report(report: dict[str, Any], out: Path) -> None:
    """Write the PNG plots of a report into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["settings"]
    per_step = s["batch_size"] * s["block_size"]
    names = [r["name"] for r in report["summary"]]

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in report["runs"]:
        evals = [m for m in run["metrics"] if "val_loss" in m]
        ax.plot(
            [m["step"] * per_step for m in evals],
            [m["val_loss"] for m in evals],
            marker="o",
            ms=3,
            label=run["name"],
        )
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "val_loss.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].bar(names, [r["tokens_per_s"] or 0 for r in report["summary"]])
    axes[0].set_ylabel("training tokens/s")
    axes[1].bar(names, [r["peak_rss_mib"] for r in report["summary"]])
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
        [r["activation_sparsity"] or 0 for r in report["summary"]],
        width,
        label="activation",
    )
    ax.bar(
        [x + width / 2 for x in xs],
        [r["weight_sparsity"] for r in report["summary"]],
        width,
        label="weight",
    )
    ax.set_xticks(list(xs), names, rotation=30)
    ax.set_ylabel("fraction of exact zeros")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sparsity.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in report["summary"]:
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
