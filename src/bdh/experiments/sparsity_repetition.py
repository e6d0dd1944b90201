"""`bdh experiment sparsity-repetition`: do fewer neurons fire once a word repeats? (§6.4, Fig. 14)

The protocol: a warm-up of random letters, then one random word (random letters) repeated,
the repeats separated by spaces. For every layer and token the density of x (x_sparse) and
y (y_sparse), the fraction of their neurons that are non-zero, averaged over heads, over
many random words (seeded). The paper reports 4-7.5% while the model memorises and about
2.5% while it repeats. Also the model's loss per token, which shows whether it learned
the word in context (copying makes the repeats predictable).

Writes `report.md`, `report.json` and `density_by_position.png` into the output
directory (a model trained for it goes to OUT/runs/model).
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bdh.errors import ConfigError
from bdh.experiments.report import ReportDir, machine_info
from bdh.experiments.trained_model import (
    SMOKE_RECIPE,
    ModelRecipe,
    describe_model,
    experiment_model,
    untrained_twin,
)

# x: x_sparse; y: y_sparse; xy: x_sparse * y_sparse, which is the paper's y (its
# y_{t,l} = (D_y LN(a*))^+ ⊙ x_{t,l}); this code's y_sparse is the factor before the product.
SIGNALS = ("x", "y", "xy")
SIGNAL_NAMES = {"x": "x (x_sparse)", "y": "y_sparse", "xy": "x*y (the paper's y)"}
# The summary of §6.4 / Fig. 14 (the paper's text was not at hand to quote).
PAPER = {"memorising": (0.04, 0.075), "repeating": 0.025}

# `--smoke`: seconds, to test the pipeline (a few training steps, a few short words).
SMOKE: dict[str, Any] = dict(
    recipe=SMOKE_RECIPE,
    words=4,
    warmup=8,
    word_length=3,
    repeats=3,
    batch=2,
)


@dataclass
class SparsityRepetitionSettings:
    out_dir: str
    checkpoint: str | None = None
    recipe: ModelRecipe = field(default_factory=ModelRecipe)
    words: int = 256  # random words averaged over
    warmup: int = 64  # random letters before the word
    word_length: int = 6
    repeats: int = 16
    batch: int = 32  # sequences per forward
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if min(self.words, self.warmup, self.word_length, self.batch) < 1 or self.repeats < 2:
            raise ConfigError(
                "sparsity-repetition needs words, warm-up, word length and batch >= 1, and at least 2 repeats"
            )

    @property
    def length(self) -> int:
        return self.warmup + self.repeats * (self.word_length + 1)


def make_sequences(s: SparsityRepetitionSettings) -> tuple[list[str], list[str], list[str]]:
    """From s.seed: the texts (warm-up letters, then ' word' repeated), their controls (the
    same warm-up and first word, then a fresh random word each time) and the words."""
    rng = np.random.default_rng(s.seed)
    letters = np.array(list(string.ascii_lowercase))
    texts, words = [], []
    for _ in range(s.words):
        warm = "".join(rng.choice(letters, s.warmup))
        word = "".join(rng.choice(letters, s.word_length))
        texts.append(warm + f" {word}" * s.repeats)
        words.append(word)
    fresh = np.random.default_rng([s.seed, 1])
    controls = [
        text[: s.warmup + s.word_length + 1]
        + "".join(f" {''.join(fresh.choice(letters, s.word_length))}" for _ in range(s.repeats - 1))
        for text in texts
    ]
    return texts, controls, words


def phases(s: SparsityRepetitionSettings) -> dict[str, tuple[int, int]]:
    """Token ranges [start, end): the warm-up, the word's first showing, its second, and
    the second half of the repeats. Token 0 is left out: it has nothing to attend to, so
    its attention output and y are zero whatever the text."""
    w = s.word_length + 1
    late = s.warmup + (s.repeats // 2) * w
    return {
        "warm-up (random letters)": (1, s.warmup),
        "word, 1st showing": (s.warmup, s.warmup + w),
        "word, 2nd showing": (s.warmup + w, s.warmup + 2 * w),
        f"repeats {s.repeats // 2 + 1}-{s.repeats}": (late, s.length),
    }


def measure(model: Any, tokenizer: Any, texts: list[str], batch: int) -> dict[str, np.ndarray]:
    """Per sequence: density [L, B, T] of each signal (mean over heads), loss [B, T-1]."""
    import torch
    import torch.nn.functional as F

    from bdh.analysis.capture import capture_activations
    from bdh.analysis.sparsity import active_fraction

    out: dict[str, list[np.ndarray]] = {name: [] for name in (*SIGNALS, "loss")}
    for start in range(0, len(texts), batch):
        idx = torch.tensor([tokenizer.encode(t) for t in texts[start : start + batch]])
        acts = capture_activations(model, idx, SIGNALS)
        for name in SIGNALS:
            out[name].append(active_fraction(acts[name]).mean(axis=2))  # L, B, T
        with torch.no_grad():
            logits, _ = model(idx)
        loss = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), idx[:, 1:], reduction="none")
        out["loss"].append(loss.numpy())
    return {
        **{name: np.concatenate(out[name], axis=1) for name in SIGNALS},
        "loss": np.concatenate(out["loss"], axis=0),
    }


def _mean_ci(values: np.ndarray) -> dict[str, float]:
    """Mean and a normal 95% interval of the mean over the first axis."""
    mean = float(values.mean())
    half = 1.96 * float(values.std(ddof=1)) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half}


def summarize(data: dict[str, np.ndarray], s: SparsityRepetitionSettings) -> dict[str, Any]:
    """Per signal and layer: the phases' mean density (with its 95% interval over words),
    and the per-word drop from the warm-up to the late repeats."""
    spans = phases(s)
    warm, late = list(spans.values())[0], list(spans.values())[-1]
    result: dict[str, Any] = {}
    for name in SIGNALS:
        dens = data[name]  # L, B, T
        layers = []
        for layer in range(dens.shape[0]):
            per_word = {p: dens[layer, :, a:b].mean(axis=1) for p, (a, b) in spans.items()}
            drop = per_word[list(spans)[0]] - per_word[list(spans)[-1]]
            layers.append({
                "layer": layer,
                "phases": {p: _mean_ci(v) for p, v in per_word.items()},
                "drop_warmup_to_late": _mean_ci(drop),
                "ratio_late_to_warmup": float(dens[layer, :, late[0]:late[1]].mean()
                                              / max(dens[layer, :, warm[0]:warm[1]].mean(), 1e-12)),
            })  # fmt: skip
        overall = {p: _mean_ci(dens[:, :, a:b].mean(axis=(0, 2))) for p, (a, b) in spans.items()}
        result[name] = {"layers": layers, "all_layers": overall}
    loss = data["loss"]  # B, T-1: loss of predicting token t+1
    result["loss"] = {
        p: _mean_ci(loss[:, max(a - 1, 0) : b - 1].mean(axis=1)) for p, (a, b) in spans.items()
    }
    return result


def run_sparsity_repetition(
    settings: SparsityRepetitionSettings,
    force: bool = False,
    command: str = "bdh experiment sparsity-repetition",
) -> dict[str, Any]:
    """Get the model, measure density by token over the random words, write the report."""
    import torch

    out = ReportDir(settings.out_dir, force)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    machine = machine_info()
    model, tokenizer, provenance = experiment_model(
        settings.checkpoint, settings.recipe, out.path("runs") / "model"
    )
    texts, controls, words = make_sequences(settings)
    data = measure(model, tokenizer, texts, settings.batch)
    summary = summarize(data, settings)
    fresh = measure(model, tokenizer, controls, settings.batch)
    effect = repetition_effect(data, fresh, settings)
    # The same words through a randomly initialised model of the same shape: what changes
    # with repetition before any learning.
    untrained = summarize(
        measure(untrained_twin(provenance, settings.seed), tokenizer, texts, settings.batch),
        settings,
    )
    report = {
        "command": command,
        "settings": asdict(settings),
        "machine": machine,
        "model": provenance,
        "example": texts[0],
        "example_control": controls[0],
        "phases": {p: list(r) for p, r in phases(settings).items()},
        "summary": summary,
        "summary_untrained": untrained,
        "repetition_effect": effect,
        "verdicts": _verdicts(summary, effect),
        "density_by_position": {
            name: data[name].mean(axis=1).tolist() for name in SIGNALS
        },  # L, T: mean over words
        "loss_by_position": data["loss"].mean(axis=0).tolist(),
    }
    _plot(data, fresh, settings, out.path("density_by_position.png"))
    out.write_json("report.json", report)
    out.write_text("report.md", markdown_report(report))
    return report


def repetition_effect(
    repeated: dict[str, np.ndarray], fresh: dict[str, np.ndarray], s: SparsityRepetitionSettings
) -> dict[str, Any]:
    """Late-phase density of the fresh-word controls minus that of the repeats, per word
    (positive: repetition is sparser), per signal and layer; and the loss of both."""
    a, b = list(phases(s).values())[-1]
    out: dict[str, Any] = {}
    for name in SIGNALS:
        rep_late, fresh_late = (
            repeated[name][:, :, a:b].mean(axis=2),
            fresh[name][:, :, a:b].mean(axis=2),
        )
        out[name] = {
            "layers": [
                {"layer": layer, "repeated": float(rep_late[layer].mean()),
                 "fresh": float(fresh_late[layer].mean()),
                 "fresh_minus_repeated": _mean_ci(fresh_late[layer] - rep_late[layer])}
                for layer in range(rep_late.shape[0])
            ],
            "all_layers": {"repeated": float(rep_late.mean()), "fresh": float(fresh_late.mean()),
                           "fresh_minus_repeated": _mean_ci((fresh_late - rep_late).mean(axis=0))},
        }  # fmt: skip
    out["loss"] = {
        "repeated": _mean_ci(repeated["loss"][:, a - 1 : b - 1].mean(axis=1)),
        "fresh": _mean_ci(fresh["loss"][:, a - 1 : b - 1].mean(axis=1)),
    }
    return out


def _verdicts(summary: dict[str, Any], effect: dict[str, Any]) -> list[dict[str, Any]]:
    """Does density drop from the warm-up to the late repeats, and do the late repeats sit
    below fresh words at the same positions (per-word 95% intervals above zero in every
    layer), per signal; and where do the levels sit against the paper's bands?"""
    out = []
    for name in SIGNALS:
        layers = summary[name]["layers"]
        dropping = [r["layer"] for r in layers if r["drop_warmup_to_late"]["ci95_low"] > 0]
        rising = [r["layer"] for r in layers if r["drop_warmup_to_late"]["ci95_high"] < 0]
        phases_all = summary[name]["all_layers"]
        first, last = next(iter(phases_all)), list(phases_all)[-1]
        out.append({
            "signal": name,
            "drop_on_repetition": len(dropping) == len(layers),
            "below_fresh_words": all(
                r["fresh_minus_repeated"]["ci95_low"] > 0 for r in effect[name]["layers"]
            ),
            "fresh_word_density": effect[name]["all_layers"]["fresh"],
            "layers_dropping": dropping,
            "layers_rising": rising,
            "warmup_density": phases_all[first]["mean"],
            "late_repeat_density": phases_all[last]["mean"],
            "warmup_in_paper_band": PAPER["memorising"][0] <= phases_all[first]["mean"] <= PAPER["memorising"][1],
        })  # fmt: skip
    return out


def _plot(
    data: dict[str, np.ndarray],
    fresh: dict[str, np.ndarray],
    s: SparsityRepetitionSettings,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SIGNALS) + 1, figsize=(5 * (len(SIGNALS) + 1), 4.2))
    positions = np.arange(s.length)
    for ax, name in zip(axes, SIGNALS):
        mean = data[name].mean(axis=1) * 100  # L, T
        for layer, row in enumerate(mean):
            ax.plot(positions, row, lw=1.2, label=f"layer {layer}")
        ax.plot(positions, fresh[name].mean(axis=(0, 1)) * 100, color="k", ls="--", lw=0.9,
                label="control: fresh words (all layers)")  # fmt: skip
        ax.axhspan(PAPER["memorising"][0] * 100, PAPER["memorising"][1] * 100, color="tab:orange",
                   alpha=0.12, label="paper: memorising 4-7.5%")  # fmt: skip
        ax.axhline(
            PAPER["repeating"] * 100, color="tab:green", ls=":", label="paper: repeating 2.5%"
        )
        ax.set_title(f"{SIGNAL_NAMES[name]} density over {s.words} random words")
        ax.set_ylabel("non-zero neurons (%)")
    loss = data["loss"].mean(axis=0)
    axes[-1].plot(positions[1:], loss, color="k", lw=1, label="repeated word")
    axes[-1].plot(positions[1:], fresh["loss"].mean(axis=0), color="k", ls="--", lw=0.9,
                  label="control: fresh words")  # fmt: skip
    axes[-1].legend(fontsize=7)
    axes[-1].set_title("loss of predicting each token (nats)")
    for ax in axes:
        ax.axvline(s.warmup - 0.5, color="grey", ls="--", lw=1)
        ax.axvspan(s.warmup - 0.5, s.length, color="grey", alpha=0.06)
        ax.set_xlabel(f"token (warm-up 0-{s.warmup - 1}, then ' word' x {s.repeats})")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def markdown_report(report: dict[str, Any]) -> str:
    s, m, summary = report["settings"], report["machine"], report["summary"]
    names = list(report["phases"])
    lines = [
        "# Sparsity on repetition (paper §6.4, Fig. 14)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores (shared), {m['threads']} torch threads, torch "
        f"{m['torch']}, load average at the start {m['load_average'][0]:.2f}.",
        "",
        describe_model(report["model"]),
        "",
        f"Protocol: {s['words']} random words (seed {s['seed']}); each sequence is {s['warmup']} "
        f"random lowercase letters, then ' word' {s['repeats']} times (word = {s['word_length']} "
        f"random letters), {s['warmup'] + s['repeats'] * (s['word_length'] + 1)} byte tokens, read "
        f"from an empty state. Example: `{report['example']}`. Density: the share of a layer's "
        "neurons that are non-zero at a token, averaged over heads; phases are token ranges "
        "(" + "; ".join(f"{p}: {a}-{b - 1}" for p, (a, b) in report["phases"].items()) + "). "
        "± is the 95% interval of the mean over words.",
        "",
        "![density by position](density_by_position.png)",
        "",
    ]
    for name in SIGNALS:
        lines += [
            f"## {SIGNAL_NAMES[name]} density by phase",
            "",
            "| layer | "
            + " | ".join(names)
            + " | drop warm-up -> late (per word) | late / warm-up |",
            "|" + "---|" * (len(names) + 3),
        ]
        for r in summary[name]["layers"]:
            cells = [
                f"{_pct(r['phases'][p]['mean'])} ± {_pct(r['phases'][p]['ci95_high'] - r['phases'][p]['mean'])}"
                for p in names
            ]
            d = r["drop_warmup_to_late"]
            lines.append(
                f"| {r['layer']} | " + " | ".join(cells) + f" | {_pct(d['mean'])} "
                f"[{_pct(d['ci95_low'])}, {_pct(d['ci95_high'])}] | {r['ratio_late_to_warmup']:.3f} |"
            )
        allp = summary[name]["all_layers"]
        lines.append("| all | " + " | ".join(_pct(allp[p]["mean"]) for p in names) + " | | |")
        lines.append("")
    lines += [
        "## Loss by phase",
        "",
        "| " + " | ".join(names) + " |",
        "|" + "---|" * len(names),
        "| " + " | ".join(f"{summary['loss'][p]['mean']:.3f}" for p in names) + " |",
        "",
        "Nats per token of predicting each token of the phase from the ones before it.",
        "",
    ]
    effect = report["repetition_effect"]
    late = names[-1]
    lines += [
        "## Control: the repeated word against fresh words at the same positions",
        "",
        "Each control sequence has the same warm-up and first word, then a fresh random word "
        f"each time (example: `{report['example_control']}`). Late phase ({late}): density of "
        "the repeats, of the fresh words, and the per-word difference (fresh - repeated; "
        "positive: repetition makes it sparser) with its 95% interval.",
        "",
        "| signal | layer | repeated | fresh words | fresh - repeated |",
        "|---|---|---|---|---|",
    ]
    for name in SIGNALS:
        rows = [*effect[name]["layers"], {"layer": "all", **effect[name]["all_layers"]}]
        for r in rows:
            d = r["fresh_minus_repeated"]
            lines.append(
                f"| {SIGNAL_NAMES[name]} | {r['layer']} | {_pct(r['repeated'])} | {_pct(r['fresh'])} | "
                f"{_pct(d['mean'])} [{_pct(d['ci95_low'])}, {_pct(d['ci95_high'])}] |"
            )
    lr, lf = effect["loss"]["repeated"]["mean"], effect["loss"]["fresh"]["mean"]
    copies = lr < lf - 0.5
    lines += [
        "",
        f"Loss in the late phase: {lr:.3f} nats/token on the repeated word, {lf:.3f} on fresh "
        f"words (uniform over bytes: {np.log(256):.3f}). "
        + (
            "The model predicts the repeats far better than fresh words: it has learned the "
            "word in context."
            if copies
            else "The model predicts the repeats hardly better than fresh words: it has not "
            "learned to copy the word in context, so the paper's setting (a model that "
            "memorises the word, then repeats it) is not reached."
        ),
        "",
        "## The paper's numbers next to ours",
        "",
        "| | paper (as the issue states §6.4 / Fig. 14) | "
        + " | ".join(f"ours, {SIGNAL_NAMES[n]}" for n in SIGNALS)
        + " |",
        "|---|---|" + "---|" * len(SIGNALS),
    ]
    verdicts = report["verdicts"]
    untrained = [report["summary_untrained"][n]["all_layers"] for n in SIGNALS]
    first, last = names[0], names[-1]
    lines += [
        "| while memorising (warm-up) | 4-7.5% | "
        + " | ".join(_pct(v["warmup_density"]) for v in verdicts) + " |",
        "| while repeating (late repeats) | about 2.5% | "
        + " | ".join(_pct(v["late_repeat_density"]) for v in verdicts) + " |",
        "| untrained model of the same shape: warm-up | | "
        + " | ".join(_pct(u[first]["mean"]) for u in untrained) + " |",
        "| untrained model of the same shape: late repeats | | "
        + " | ".join(_pct(u[last]["mean"]) for u in untrained) + " |",
        "",
        "All layers averaged. The untrained rows (random weights, seed "
        f"{s['seed']}) show what the protocol does to density before any learning.",
        "",
    ]  # fmt: skip
    lines += ["## Verdict", ""]
    xy = next(v for v in report["verdicts"] if v["signal"] == "xy")
    shown = any(v["below_fresh_words"] for v in report["verdicts"]) and copies
    lines += [
        f"**In short: our model {'shows' if shown else 'does not show'} the paper's drop on "
        "repetition.** "
        + (
            "The repeats are sparser than fresh words at the same positions and the model "
            "predicts them: density falls because the word is repeated."
            if shown
            else (
                "Density falls a little from the warm-up to the late repeats (x*y, the paper's "
                f"y: {_pct(xy['warmup_density'])} to {_pct(xy['late_repeat_density'])}), but "
                f"fresh words at the same positions sit at {_pct(xy['fresh_word_density'])}: the "
                "fall comes with the position and the words' format (letters between spaces), "
                "not with repetition"
                + (
                    "; and the model does not copy the word (see the loss above)."
                    if not copies
                    else "."
                )
            )
        )
        + f" Its densities (x*y about {_pct(xy['late_repeat_density'])}) sit "
        + ("inside" if xy["warmup_in_paper_band"] else "outside")
        + " the paper's 4-7.5% band and above its 2.5%; x and y_sparse alone are far denser. "
        "A tiny model trained for minutes is not the paper's model: the protocol here is "
        "ready for a larger, longer-trained checkpoint (`--checkpoint`).",
        "",
    ]
    for v in report["verdicts"]:
        if v["drop_on_repetition"]:
            said = f"**drops on repetition** in every layer (late/warm-up {v['late_repeat_density'] / max(v['warmup_density'], 1e-12):.2f})"
        elif v["layers_dropping"]:
            said = (f"**drops in layers {v['layers_dropping']} only**"
                    + (f", rises in layers {v['layers_rising']}" if v["layers_rising"] else ""))  # fmt: skip
        else:
            said = "**does not drop on repetition** in any layer" + (
                f" (it rises in layers {v['layers_rising']})" if v["layers_rising"] else ""
            )
        band = "inside" if v["warmup_in_paper_band"] else "outside"
        control = (
            "below fresh words at the same positions in every layer"
            if v["below_fresh_words"]
            else "not below fresh words at the same positions in every layer"
        )
        lines.append(
            f"- {SIGNAL_NAMES[v['signal']]}: {said}, and the repeats are {control} "
            f"({_pct(v['late_repeat_density'])} against {_pct(v['fresh_word_density'])}); its "
            f"warm-up density {_pct(v['warmup_density'])} is {band} the paper's 4-7.5% band, its "
            f"late-repeat density {_pct(v['late_repeat_density'])} against the paper's about 2.5%."
        )
    lines += [
        "",
        "## What was assumed",
        "",
        "- The paper's text was not at hand: the protocol's details here (warm-up length, word "
        "length, number of repeats, lowercase letters only, a space before each repeat, reading "
        "from an empty state) are our choices, and the paper's numbers are those the issue "
        "states, without saying which signal they are of; all three are shown (x*y is the paper's y).",
        '- Which phase is "memorising": the comparison row takes our warm-up (random letters, '
        "which the model cannot predict); the word's first showing, as unpredictable, is in "
        'the tables beside it. "Repeating" is the second half of the repeats.',
    ]
    return "\n".join(lines) + "\n"
