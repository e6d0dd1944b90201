"""`bdh experiment long-context`: is context far past the training window used, or harmful?

Four BDH runs on one corpus, token budget and seed, then each read by position through
its recurrent state far past the window it was trained on:

- `independent`: the official recipe, independent random windows, the state zeroed for each;
- `carried`: every row reads a contiguous stream and the state is carried from step to
  step, detached (truncated BPTT, paper App. B.2);
- `carried-damped`: the same with the state damped per head, ALiBi-style (paper §6.1);
- `no-bptt`: carried, with no gradient through the attention's keys, values and state
  (the paper's §7.2 ablation).

Writes `report.md`, `report.json` and `loss_by_position.png` into the output directory
(the runs go to OUT/runs/NAME).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bdh.errors import ConfigError
from bdh.experiments.report import ReportDir, machine_info

# name -> (what the run is, the TrainConfig fields that make it so, beyond the common ones)
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "independent": ("independent windows, state zeroed per window (official recipe)", {}),
    "carried": ("state carried across steps (truncated BPTT)", {"carry_state": True}),
    "carried-damped": (
        "state carried, damped per head (ALiBi-style)",
        {"carry_state": True, "model_overrides": {"damping": "alibi"}},
    ),
    "no-bptt": (
        "state carried, no gradient through keys, values and state",
        {"carry_state": True, "model_overrides": {"no_bptt": True}},
    ),
}

# `--smoke`: seconds, to test the pipeline (tiny model, a few steps, short evaluation).
SMOKE: dict[str, Any] = dict(
    steps=3,
    batch_size=2,
    block_size=16,
    reset_tokens=32,
    eval_tokens=256,
    eval_length=600,
    eval_sequences=2,
)

PAPER_CLAIMS = [
    ("App. B.2", "BDH is trained with truncated backpropagation through time, the state ρ "
     "carried across minibatches.", "carried"),
    ("§6.1", "\"Damping of historical signals over long sequences is necessary … RoPE "
     "combined with ALiBi provide a sufficient remedy.\"", "carried-damped"),
    ("§7.2", "An ablation trains without backpropagation through time.", "no-bptt"),
]  # fmt: skip


@dataclass
class LongContextSettings:
    out_dir: str
    runs: list[str] = field(default_factory=lambda: list(RUNS))
    preset: str = "tiny"
    steps: int = 600
    batch_size: int = 32
    block_size: int = 128
    reset_tokens: int | None = 4096  # carried runs: stream length before a restart
    damping: str = "alibi"
    lr: float = 6e-3
    seed: int = 1337
    data: str | None = None
    precision: str = "auto"
    eval_tokens: int = 16384  # the training runs' windowed validation sample
    eval_length: int = 65536
    eval_sequences: int = 4
    threads: int | None = None

    def __post_init__(self) -> None:
        unknown = [r for r in self.runs if r not in RUNS]
        if unknown or not self.runs:
            raise ConfigError(f"unknown runs {unknown}; choose from: {', '.join(RUNS)}")
        if self.eval_length < 2 or self.eval_sequences < 1:
            raise ConfigError("the evaluation needs a length >= 2 and at least one sequence")

    def train_config(self, name: str) -> Any:
        from bdh.train import TrainConfig

        options = dict(RUNS[name][1])
        overrides = dict(options.pop("model_overrides", {}))
        if "damping" in overrides:
            overrides["damping"] = self.damping
        if options.get("carry_state"):
            options["reset_tokens"] = self.reset_tokens
        return TrainConfig(
            preset=self.preset, model_overrides=overrides, data=self.data, steps=self.steps,
            batch_size=self.batch_size, block_size=self.block_size, lr=self.lr,
            min_lr=self.lr / 10, seed=self.seed, precision=self.precision, device="cpu",
            eval_every=max(1, self.steps // 4), eval_tokens=self.eval_tokens, log_every=max(1, min(10, self.steps // 10)),
            checkpoint_every=self.steps, keep_last=1, progress=False,
            out_dir=str(Path(self.out_dir) / "runs" / name), **options,
        )  # fmt: skip


def _weighted_loss(buckets: list[dict[str, Any]], start: int) -> float | None:
    """Mean loss over the buckets that begin at or after `start` (weighted by targets)."""
    chosen = [b for b in buckets if b["start"] >= start and b["tokens"]]
    tokens = sum(b["tokens"] for b in chosen)
    return sum(b["loss"] * b["tokens"] for b in chosen) / tokens if tokens else None


def run_long_context(
    settings: LongContextSettings, force: bool = False, command: str = "bdh experiment long-context"
) -> dict[str, Any]:
    """Train every run, score each by position, write the report; returns report.json's data.

    An existing output directory is refused unless `force` (which retrains its runs).
    """
    import torch

    from bdh.checkpoint import load_checkpoint
    from bdh.data import load_corpus
    from bdh.evaluation import loss_by_position
    from bdh.evaluation_plot import plot_loss_by_position
    from bdh.train import train

    out = ReportDir(settings.out_dir, force)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    machine = machine_info()  # the load before the runs add theirs
    configs = {name: settings.train_config(name) for name in settings.runs}  # all checked first
    corpus, _ = load_corpus(settings.data, "byte")
    val = corpus.val
    repeat = settings.eval_length > len(val)
    runs: dict[str, Any] = {}
    curves = {}
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        run_dir = train(cfg)
        train_s = time.perf_counter() - t0
        model, tokenizer = load_checkpoint(run_dir)
        t0 = time.perf_counter()
        result = loss_by_position(
            model, val, tokenizer, settings.eval_length, settings.eval_sequences,
            repeat=repeat, source=f"validation split of {corpus.source}",
        )  # fmt: skip
        curves[name] = result
        record = result.to_dict()
        runs[name] = {
            "description": RUNS[name][0],
            "train_config": cfg.to_dict(),
            "train_seconds": train_s,
            "eval_seconds": time.perf_counter() - t0,
            "tokens_trained": cfg.steps * cfg.batch_size * cfg.block_size,
            "final_val_loss": _final_val_loss(run_dir),
            "beyond_window_loss": _weighted_loss(record["buckets"], max(cfg.block_size, 256)),
            "by_position": record,
        }
    report = {
        "command": command,
        "settings": asdict(settings),
        "machine": machine,
        "eval_text": {"tokens": len(val), "repeats": repeat},
        "runs": runs,
        "verdicts": _verdicts(runs, settings),
    }
    plot_loss_by_position(
        curves, out.path("loss_by_position.png"),
        title=f"{settings.preset}: loss by position, trained on windows of {settings.block_size}",
    )  # fmt: skip
    out.write_json("report.json", report)
    out.write_text("report.md", markdown_report(report))
    return report


def _final_val_loss(run_dir: Path) -> float | None:
    from bdh.train.metrics import read_metrics

    vals = [r["val_loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "val_loss" in r]
    return vals[-1] if vals else None


# A run "explodes" at far positions when its last bucket is this much above its best one.
EXPLOSION_NATS = 0.5
# Far and near buckets closer than this are called even (one seed cannot tell them apart).
EVEN_NATS = 0.1


def _verdicts(runs: dict[str, Any], s: LongContextSettings) -> list[dict[str, Any]]:
    """The issue's two targets, judged from the measured numbers."""
    out = []
    a, b = runs.get("independent"), runs.get("carried")
    if a and b and a["beyond_window_loss"] is not None and b["beyond_window_loss"] is not None:
        met = b["beyond_window_loss"] < a["beyond_window_loss"]
        out.append({
            "target": "carried state reaches a lower loss than independent windows beyond the training window",
            "met": met,
            "evidence": f"positions >= {max(s.block_size, 256)}: carried {b['beyond_window_loss']:.4f}, "
                        f"independent {a['beyond_window_loss']:.4f} nats/token",
        })  # fmt: skip
    damped = runs.get("carried-damped")
    if damped:
        buckets = [x for x in damped["by_position"]["buckets"] if x["tokens"]]
        best, last = min(x["loss"] for x in buckets), buckets[-1]
        met = math.isfinite(last["loss"]) and last["loss"] <= best + EXPLOSION_NATS
        out.append({
            "target": f"with damping, no explosion at the far end ({last['label']})",
            "met": met,
            "evidence": f"last bucket {last['loss']:.4f} vs best bucket {best:.4f} nats/token "
                        f"(explosion: more than {EXPLOSION_NATS} above the best)",
        })  # fmt: skip
    return out


def _readings(runs: dict[str, Any]) -> list[str]:
    """Plain statements read off the buckets: far versus near loss, and the pairs of runs
    whose comparison the paper's claims are about."""
    out = []
    for name, r in runs.items():
        buckets = [b for b in r["by_position"]["buckets"] if b["tokens"]]
        first, last = buckets[0], buckets[-1]
        change = last["loss"] - first["loss"]
        if abs(change) <= EVEN_NATS:
            effect = f"about even (within {EVEN_NATS} nats)"
        else:
            effect = "far context helps" if change < 0 else "far context hurts"
        out.append(
            f"`{name}`: the far bucket ({last['label']}) is {abs(change):.3f} nats "
            f"{'lower' if change < 0 else 'higher'} than the first ({first['label']}): {effect}."
        )
    pairs = [("carried", "carried-damped", "damping"), ("carried", "no-bptt", "no-BPTT")]
    for base, other, what in pairs:
        if base in runs and other in runs:
            a, b = (
                runs[base]["by_position"]["overall"]["loss"],
                runs[other]["by_position"]["overall"]["loss"],
            )
            out.append(
                f"{what}: `{other}` {b:.3f} against `{base}` {a:.3f} nats/token over all positions ({b - a:+.3f})."
            )
    return out


def markdown_report(report: dict[str, Any]) -> str:
    s, runs, m = report["settings"], report["runs"], report["machine"]
    first = next(iter(runs.values()))
    labels = [b["label"] for b in first["by_position"]["buckets"]]
    lines = [
        "# Long context: carried state, damping and no-BPTT, read far past the training window",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['threads']} torch threads, torch {m['torch']}, load average "
        f"at the start {m['load_average'][0]:.2f}. Budget per run: {s['steps']} steps of "
        f"{s['batch_size']} x {s['block_size']} tokens ({s['steps'] * s['batch_size'] * s['block_size']:,} "
        f"tokens), preset `{s['preset']}`, seed {s['seed']}, lr {s['lr']}; carried runs restart "
        f"their streams every {s['reset_tokens'] or 'stripe'} tokens; damping `{s['damping']}`.",
        "",
        f"Evaluation: {s['eval_sequences']} sequence(s) of {s['eval_length']:,} tokens of the "
        f"validation split ({report['eval_text']['tokens']:,} tokens"
        + (", read again from its start past its end" if report["eval_text"]["repeats"] else "")
        + "), each from a zero state, loss in nats/token by position.",
        "",
        "| run | " + " | ".join(labels) + " | all | final val loss (windows) | train s |",
        "|" + "---|" * (len(labels) + 4),
    ]
    for name, r in runs.items():
        cells = [f"{b['loss']:.3f}" for b in r["by_position"]["buckets"]]
        val = r["final_val_loss"]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {r['by_position']['overall']['loss']:.3f} | "
            f"{'n/a' if val is None else f'{val:.3f}'} | {r['train_seconds']:.0f} |"
        )
    lines += ["", "![loss by position](loss_by_position.png)", "", "## Targets", ""]
    for v in report["verdicts"]:
        lines.append(
            f"- {'**met**' if v['met'] else '**not met**'}: {v['target']} ({v['evidence']})."
        )
    lines += ["", "## What the numbers say", ""]
    lines += [f"- {sentence}" for sentence in _readings(runs)]
    lines += [
        f"- One seed ({s['seed']}) per run: differences of a few hundredths of a nat are within "
        "what another seed could change; the gaps between rows above are larger.",
        "",
        "## The paper's claims next to ours",
        "",
    ]
    for section, claim, run in PAPER_CLAIMS:
        if run in runs:
            lines.append(f"- {section}: {claim} Ours: see the `{run}` row and the readings above.")
    lines += ["", "Runs: " + "; ".join(f"`{n}`: {r['description']}" for n, r in runs.items()) + "."]
    return "\n".join(lines) + "\n"
