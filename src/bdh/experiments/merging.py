"""`bdh experiment merging`: model merging by concatenation, the layout of paper §7.1 Table 2.

One base model trained on corpus 0, two copies of it fine-tuned on corpora A and B, and
their merge (`bdh.merge`: the neurons of both, `embed`/`lm_head` averaged), optionally
followed by a short fine-tune of the merged model on a mix of A's and B's training
splits. Every model is scored on the validation split of every corpus (byte tokenizer,
bits per byte) with `bdh.evaluation.evaluate`.

Writes `report.md`, `report.json` and `bits_per_byte.png` into the output directory;
the runs go to OUT/runs/NAME, corpora built on the fly to OUT/runs/corpora.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bdh.errors import ConfigError
from bdh.experiments.report import ReportDir, machine_info

# The models of the table, in order; what each is.
MODELS: dict[str, str] = {
    "base": "trained on corpus 0",
    "+A": "base fine-tuned on corpus A",
    "+B": "base fine-tuned on corpus B",
    "merged": "+A and +B concatenated (bdh.merge), no further training",
    "merged+ft": "merged, then fine-tuned briefly on A and B mixed",
}

# Corpora built into OUT/runs/corpora when named instead of given as a path (they need no source).
BUILT_ON_THE_FLY = ("python-stdlib",)

# A fortune file for `--smoke` when no corpus B is given: a few German proverbs, enough
# for the seconds-long pipeline check (the real run reads Debian's fortunes-de).
SMOKE_FORTUNES = """\
Morgenstund hat Gold im Mund.
%
Wer anderen eine Grube gräbt, fällt selbst hinein.
%
Aller Anfang ist schwer.
%
Übung macht den Meister.
%
Was du heute kannst besorgen, das verschiebe nicht auf morgen.
%
Der Apfel fällt nicht weit vom Stamm.
%
Ende gut, alles gut.
%
Wer rastet, der rostet.
%
"""

# `--smoke`: seconds, to test the pipeline (tiny model, a few steps, short evaluation).
SMOKE: dict[str, Any] = dict(
    base_steps=3,
    ft_steps=2,
    mix_steps=2,
    batch_size=2,
    block_size=16,
    eval_tokens=256,
    build_max_bytes=20_000,
    mix_chunk=256,
)

PAPER = {
    "section": "§7.1, Table 2",
    "available": False,
    # The paper's text was not available; what secondary sources say it reports.
    "claim": (
        "BDH models that share their latent space merge by concatenating their neurons into "
        "one larger model that combines what both parts learned (a reader's summary, "
        "discourse.numenta.org). The paper's experiment merges models trained on different "
        'languages; concatenated directly, the merged model shows a "human-like '
        'degradation": it mixes the languages and grammatical constructs of its parents, and '
        "further fine-tuning restores proficiency (a summary of the paper, paperzilla.ai)."
    ),
}


@dataclass
class MergingSettings:
    out_dir: str
    base_data: str = "shakespeare"  # corpus 0
    data_a: str = "python-stdlib"  # a path, or a name in BUILT_ON_THE_FLY
    data_b: str | None = None  # a path (e.g. built by `bdh data build fortunes`)
    preset: str = "tiny"
    base_steps: int = 600
    ft_steps: int = 300
    mix_steps: int = 150  # 0 = no merged+ft model
    batch_size: int = 16
    block_size: int = 128
    lr: float = 6e-3
    ft_lr: float = 3e-3
    shared: str = "average"
    seed: int = 1337
    precision: str = "auto"
    eval_tokens: int = 32768  # per corpus, from the start of its validation split
    build_max_bytes: int = 2_000_000  # corpora built on the fly
    mix_chunk: int = 4096  # bytes: the mixed corpus alternates chunks of A's and B's train splits
    sample_tokens: int = 160  # generated per model and prompt (0 = no samples)
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.shared not in ("average", "a"):
            raise ConfigError(f"shared must be 'average' or 'a', got {self.shared!r}")
        for name in (
            "base_steps",
            "ft_steps",
            "batch_size",
            "block_size",
            "eval_tokens",
            "mix_chunk",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mix_steps < 0:
            raise ConfigError(f"mix_steps must be >= 0, got {self.mix_steps}")

    def train_config(
        self, name: str, data: str, steps: int, lr: float, init_from: str | None
    ) -> Any:
        from bdh.train import TrainConfig

        return TrainConfig(
            preset=self.preset, data=data, init_from=init_from, steps=steps,
            batch_size=self.batch_size, block_size=self.block_size, lr=lr, min_lr=lr / 10,
            warmup_steps=min(20, max(1, steps // 10)), seed=self.seed, precision=self.precision,
            device="cpu", eval_every=max(1, steps // 2), eval_tokens=min(8192, self.eval_tokens),
            log_every=max(1, min(10, steps // 10)), checkpoint_every=steps, keep_last=1,
            progress=False, out_dir=str(Path(self.out_dir) / "runs" / name),
        )  # fmt: skip


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _corpus_path(spec: str, s: MergingSettings, out: ReportDir) -> str:
    """A corpus spec made usable: names in BUILT_ON_THE_FLY, and `smoke-fortunes` (a fortune
    file from SMOKE_FORTUNES), are built into OUT/runs/corpora; anything else is a corpus spec."""
    from bdh.data.build import build_corpus

    if spec in BUILT_ON_THE_FLY:
        target = out.path("runs") / "corpora" / f"{spec}.txt"
        build_corpus(spec, target, max_bytes=s.build_max_bytes, force=True)
        return str(target)
    if spec == "smoke-fortunes":
        source = out.path("runs") / "corpora" / "smoke-fortunes-source" / "sprichworte"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(SMOKE_FORTUNES * 8, encoding="utf-8")
        target = out.path("runs") / "corpora" / "smoke-fortunes.txt"
        build_corpus("fortunes", target, source=source.parent, force=True)
        return str(target)
    return spec


def _mixed_corpus(a_train: np.ndarray, b_train: np.ndarray, chunk: int, path: Path) -> Path:
    """Alternate `chunk`-byte pieces of A's and B's training splits (no validation bytes),
    as many of each as the shorter split has, into `path`."""
    pieces = min(len(a_train), len(b_train)) // chunk
    if pieces < 1:
        raise ConfigError(
            f"the training splits of A and B are shorter than one mix chunk ({chunk} bytes)"
        )
    with open(path, "wb") as f:
        for i in range(pieces):
            f.write(np.asarray(a_train[i * chunk : (i + 1) * chunk]).tobytes())
            f.write(np.asarray(b_train[i * chunk : (i + 1) * chunk]).tobytes())
    return path


def parameter_counts(model: Any) -> dict[str, int]:
    """All parameters, those with a neuron axis (encoder, encoder_v, decoder) and the
    shared ones (embed, lm_head)."""
    neuron = sum(t.numel() for t in (model.encoder, model.encoder_v, model.decoder))
    shared = model.embed.weight.numel() + model.lm_head.numel()
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "neuron": neuron,
        "shared": shared,
        "neurons_per_head": model.config.neurons_per_head,
    }


def _final_val_loss(run_dir: Path) -> float | None:
    from bdh.train.metrics import read_metrics

    vals = [r["val_loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "val_loss" in r]
    return vals[-1] if vals else None


def run_merging(
    settings: MergingSettings, force: bool = False, command: str = "bdh experiment merging"
) -> dict[str, Any]:
    """Train, merge, evaluate and write the report; returns report.json's data.

    An existing output directory is refused unless `force` (which starts it over).
    """
    import torch

    from bdh.checkpoint import load_checkpoint
    from bdh.data import load_corpus
    from bdh.evaluation import evaluate
    from bdh.merge import merge_checkpoints
    from bdh.precision import resolve_precision
    from bdh.train import train

    s = settings
    if s.data_b is None:
        raise ConfigError("corpus B is needed: --data-b FILE (see docs/merging.md)")
    out = ReportDir(s.out_dir, force)
    if s.threads:
        torch.set_num_threads(s.threads)
    machine = machine_info()  # the load before the runs add theirs
    (out.path("runs") / "corpora").mkdir(parents=True, exist_ok=True)
    specs = {"0": s.base_data, "A": s.data_a, "B": s.data_b}
    paths = {role: _corpus_path(spec, s, out) for role, spec in specs.items()}
    corpora = {}
    for role, path in paths.items():
        corpora[role], _ = load_corpus(path, "byte")
        corpora[role].check_block_size(s.block_size)
    corpus_info = {
        role: {
            "spec": specs[role],
            "path": corpora[role].source,
            "sha256": _sha256(Path(corpora[role].source))
            if Path(corpora[role].source).is_file()
            else None,
            "train_bytes": len(corpora[role].train),
            "val_bytes": len(corpora[role].val),
        }
        for role in corpora
    }
    runs = Path(s.out_dir) / "runs"
    plan = [  # name, corpus, steps, lr, started from
        ("base", paths["0"], s.base_steps, s.lr, None),
        ("+A", paths["A"], s.ft_steps, s.ft_lr, "base"),
        ("+B", paths["B"], s.ft_steps, s.ft_lr, "base"),
    ]
    dirs: dict[str, Path] = {}
    records: dict[str, dict[str, Any]] = {}

    def run_dir_name(name: str) -> str:
        return {"+A": "ft-a", "+B": "ft-b", "merged+ft": "merged-ft"}.get(name, name)

    def trained(name: str, data: str, steps: int, lr: float, start: str | None) -> None:
        init = str(dirs[start]) if start else None
        cfg = s.train_config(run_dir_name(name), data, steps, lr, init)
        t0 = time.perf_counter()
        dirs[name] = train(cfg)
        records[name] = {
            "description": MODELS[name],
            "train_config": cfg.to_dict(),
            "train_seconds": time.perf_counter() - t0,
            "tokens_trained": steps * s.batch_size * s.block_size,
            "final_val_loss": _final_val_loss(dirs[name]),
        }

    for stage in plan:
        trained(*stage)
    t0 = time.perf_counter()
    dirs["merged"] = merge_checkpoints(dirs["+A"], dirs["+B"], runs / "merged", s.shared)
    records["merged"] = {
        "description": MODELS["merged"], "train_config": None, "shared": s.shared,
        "train_seconds": time.perf_counter() - t0, "tokens_trained": 0, "final_val_loss": None,
    }  # fmt: skip
    if s.mix_steps:
        mixed = _mixed_corpus(
            corpora["A"].train,
            corpora["B"].train,
            s.mix_chunk,
            out.path("runs") / "corpora" / "mixed-a-b.txt",
        )
        corpus_info["A+B"] = {
            "spec": "training splits of A and B, alternating chunks",
            "path": str(mixed),
            "sha256": _sha256(mixed),
            "train_bytes": mixed.stat().st_size,
            "val_bytes": 0,
        }
        trained("merged+ft", str(mixed), s.mix_steps, s.ft_lr, "merged")

    evals: dict[str, dict[str, Any]] = {}
    for name in records:
        model, tok = load_checkpoint(dirs[name])
        records[name]["parameters"] = parameter_counts(model)
        t0 = time.perf_counter()
        evals[name] = {}
        for role, corpus in corpora.items():
            result = evaluate(
                model, corpus.val, tok, s.block_size, batch_size=8, max_tokens=s.eval_tokens
            )
            evals[name][role] = asdict(result)
        records[name]["eval_seconds"] = time.perf_counter() - t0
        records[name]["eval"] = evals[name]
        if s.sample_tokens:
            records[name]["samples"] = _samples(model, tok, corpora, s)
    report = {
        "command": command,
        "settings": asdict(s),
        "machine": machine,
        "training_precision": resolve_precision(s.precision, torch.device("cpu"), "bdh"),
        "paper": PAPER,
        "corpora": corpus_info,
        "models": records,
        "parameter_check": _parameter_check(records),
        "verdicts": _verdicts(evals),
    }
    plot_bits_per_byte(evals, out.path("bits_per_byte.png"), _corpus_labels(corpus_info))
    out.write_json("report.json", report)
    out.write_text("report.md", markdown_report(report))
    return report


# Prompts of the samples: this many bytes of a validation split, from its second line on.
PROMPT_BYTES = 48


def _prompt(val: np.ndarray) -> str:
    head = np.asarray(val[:4096]).tobytes()
    start = head.find(b"\n") + 1
    return head[start : start + PROMPT_BYTES].decode("utf-8", errors="replace")


def _samples(
    model: Any, tokenizer: Any, corpora: dict[str, Any], s: MergingSettings
) -> dict[str, Any]:
    """A continuation of a prompt from the validation split of A and of B (seeded sampling,
    temperature 0.8): does a model write the language of the prompt, or mix?"""
    from bdh.generate import SamplingConfig, generate_text

    out = {}
    for role in ("A", "B"):
        prompt = _prompt(corpora[role].val)
        text = generate_text(
            model,
            tokenizer,
            [prompt],
            s.sample_tokens,
            SamplingConfig(temperature=0.8),
            seed=s.seed,
        )[0]
        out[role] = {"prompt": prompt, "continuation": text}
    return out


def _parameter_check(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """merged = neuron params of +A + neuron params of +B + one set of shared params."""
    a, b, m = (records[n]["parameters"] for n in ("+A", "+B", "merged"))
    expected = a["neuron"] + b["neuron"] + a["shared"]
    return {
        "merged_total": m["total"],
        "expected": expected,
        "holds": m["total"] == expected and m["shared"] == a["shared"],
        "formula": "neuron(+A) + neuron(+B) + shared(embed, lm_head)",
    }


def _bpb(evals: dict[str, dict[str, Any]], model: str, corpus: str) -> float:
    return float(evals[model][corpus]["bits_per_byte"])


def _verdicts(evals: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """What the paper's claim implies for each cell of the table, judged on the numbers."""
    out = []
    for role, ft, other in (("A", "+A", "+B"), ("B", "+B", "+A")):
        base, spec, cross, merged = (_bpb(evals, m, role) for m in ("base", ft, other, "merged"))
        out.append({
            "target": f"fine-tuning on {role} helps on {role}: {ft} below base",
            "met": spec < base,
            "evidence": f"{ft} {spec:.3f} vs base {base:.3f} bits/byte on {role}",
        })  # fmt: skip
        out.append({
            "target": f"the merged model keeps {role}: below base and below {other} on {role}",
            "met": merged < base and merged < cross,
            "evidence": f"merged {merged:.3f}, base {base:.3f}, {other} {cross:.3f}, {ft} {spec:.3f} bits/byte on {role}",
        })  # fmt: skip
    if "merged+ft" in evals:
        for role, ft in (("A", "+A"), ("B", "+B")):
            mft, merged, spec = (_bpb(evals, m, role) for m in ("merged+ft", "merged", ft))
            out.append({
                "target": f"after a short fine-tune on A and B mixed, the merged model is as good as {ft} on {role}",
                "met": mft <= spec,
                "evidence": f"merged+ft {mft:.3f}, merged {merged:.3f}, {ft} {spec:.3f} bits/byte on {role}",
            })  # fmt: skip
    return out


def _corpus_labels(corpus_info: dict[str, Any]) -> dict[str, str]:
    return {
        role: f"{role}: {Path(str(info['spec'])).stem}"
        for role, info in corpus_info.items()
        if role != "A+B"
    }


def plot_bits_per_byte(
    evals: dict[str, dict[str, Any]], out_path: Path, labels: dict[str, str]
) -> Path:
    """Grouped bars: one group per evaluation corpus, one bar per model."""
    from bdh.evaluation_plot import require_pyplot

    plt = require_pyplot()
    models = list(evals)
    roles = list(labels)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(roles))]
        ax.bar(xs, [_bpb(evals, model, r) for r in roles], width, label=model)
    ax.set_xticks(range(len(roles)))
    ax.set_xticklabels([labels[r] for r in roles])
    ax.set_ylabel("validation bits per byte (lower is better)")
    ax.set_title("Merging by concatenation: every model on every corpus")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def markdown_report(report: dict[str, Any]) -> str:
    s, m, models, corpora = (
        report["settings"],
        report["machine"],
        report["models"],
        report["corpora"],
    )
    roles = [r for r in corpora if r != "A+B"]
    labels = _corpus_labels(corpora)
    tokens = lambda n: f"{n:,}"  # noqa: E731
    lines = [
        "# Model merging by concatenation (paper §7.1, Table 2 layout)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['threads']} torch threads, torch {m['torch']}, load average "
        f"at the start {m['load_average'][0]:.2f}. Preset `{s['preset']}`, seed {s['seed']}, "
        f"training precision {report['training_precision']} (scoring in fp32), "
        f"windows of {s['block_size']} bytes, batch {s['batch_size']}. Budget: base "
        f"{s['base_steps']} steps at lr {s['lr']}, each fine-tune {s['ft_steps']} steps at lr "
        f"{s['ft_lr']}, merged+ft {s['mix_steps']} steps at lr {s['ft_lr']}; embed/lm_head of the "
        f"merge: `{s['shared']}`.",
        "",
        "## Corpora",
        "",
        "| corpus | source | train bytes | val bytes | val bytes scored | sha256 |",
        "|---|---|---|---|---|---|",
    ]
    first = next(iter(models.values()))
    for role, info in corpora.items():
        digest = (info["sha256"] or "n/a")[:16]
        scored = tokens(first["eval"][role]["tokens"]) if role in first["eval"] else "n/a"
        lines.append(
            f"| {role} | `{info['spec']}` | {tokens(info['train_bytes'])} | {tokens(info['val_bytes'])} | "
            f"{scored} | {digest} |"
        )
    lines += [
        "",
        f"## Validation bits per byte (at most the first {tokens(s['eval_tokens'])} bytes of each validation split)",
        "",
        "| model | "
        + " | ".join(labels[r] for r in roles)
        + " | parameters | neurons/head | trained tokens | train s |",
        "|" + "---|" * (len(roles) + 5),
    ]
    for name, r in models.items():
        cells = [f"{r['eval'][role]['bits_per_byte']:.3f}" for role in roles]
        p = r["parameters"]
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {tokens(p['total'])} | {p['neurons_per_head']} | "
            f"{tokens(r['tokens_trained'])} | {r['train_seconds']:.0f} |"
        )
    check = report["parameter_check"]
    lines += [
        "",
        f"Parameters of the merge: {tokens(check['merged_total'])} = {check['formula']} = "
        f"{tokens(check['expected'])} ({'holds' if check['holds'] else 'DOES NOT HOLD'}).",
        "",
        "![bits per byte](bits_per_byte.png)",
        "",
        "## Targets",
        "",
    ]
    for v in report["verdicts"]:
        lines.append(
            f"- {'**met**' if v['met'] else '**not met**'}: {v['target']} ({v['evidence']})."
        )
    lines += ["", "## What the numbers say", ""]
    lines += [f"- {sentence}" for sentence in _readings(report)]
    paper = report["paper"]
    lines += [
        "",
        "## The paper's claim next to ours",
        "",
        f"- Paper ({paper['section']}): {paper['claim']}",
    ]
    if not paper["available"]:
        lines.append(
            "- The paper's Table 2 itself (its numbers and its exact corpora) was not available "
            "to this project, so no number of ours is set beside one of the paper's."
        )
    lines.append(f"- Ours: {_agreement(report)}")
    lines += [
        "",
        "Models: " + "; ".join(f"`{n}`: {r['description']}" for n, r in models.items()) + ".",
    ]
    if any("samples" in r for r in models.values()):
        lines += [
            "",
            "## Samples",
            "",
            "Each model continues the same prompt from the validation split of A and of B "
            "(temperature 0.8, seed fixed); the prompt is in brackets.",
        ]
        for role in ("A", "B"):
            lines += ["", f"### Prompt from {labels[role]}", ""]
            for name, r in models.items():
                if "samples" in r:
                    sample = r["samples"][role]
                    text = f"[{sample['prompt']}]{sample['continuation']}".replace("```", "` ` `")
                    lines += [f"`{name}`:", "", "```text", text, "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _gain_kept(evals: dict[str, dict[str, Any]], model: str, role: str, specialist: str) -> float:
    """The share of the specialist's gain over base on `role` that `model` has too."""
    base, spec, m = (_bpb(evals, n, role) for n in ("base", specialist, model))
    return (base - m) / (base - spec) if base != spec else float("nan")


def _readings(report: dict[str, Any]) -> list[str]:
    """Plain statements read off the table."""
    evals = {n: r["eval"] for n, r in report["models"].items()}
    out = []
    for role, spec, other in (("A", "+A", "+B"), ("B", "+B", "+A")):
        merged, s_bpb, o_bpb = (_bpb(evals, n, role) for n in ("merged", spec, other))
        out.append(
            f"On {role}, the merge is {merged - s_bpb:+.3f} bits/byte from {spec} (its parent that "
            f"learned {role}) and {merged - o_bpb:+.3f} from {other}: it keeps "
            f"{_gain_kept(evals, 'merged', role, spec):.0%} of {spec}'s gain over base."
        )
    base0 = _bpb(evals, "base", "0")
    cells = ", ".join(f"{n} {_bpb(evals, n, '0') - base0:+.3f}" for n in evals if n != "base")
    out.append(f"On corpus 0, against base ({base0:.3f} bits/byte): {cells}.")
    if "merged+ft" in evals:
        extra = report["models"]["merged+ft"]["tokens_trained"]
        kept = ", ".join(
            f"{_gain_kept(evals, 'merged+ft', role, spec):.0%} of {spec}'s gain on {role}"
            for role, spec in (("A", "+A"), ("B", "+B"))
        )
        out.append(
            f"After its fine-tune on A and B mixed ({extra:,} more tokens, half from each), the "
            f"merge has {kept}."
        )
    if any("samples" in r for r in report["models"].values()):
        out.append(
            "Whether the merge mixes the styles of its parents (the paper's observation) is not "
            "measured by a number here; the samples at the end show what each model writes after "
            "a prompt of A and of B."
        )
    out.append(
        f"One seed ({report['settings']['seed']}) and one budget: differences of a few "
        "hundredths of a bit per byte are within what another seed could change."
    )
    return out


def _agreement(report: dict[str, Any]) -> str:
    """Does our result agree with the paper's claim that the merge keeps both skills?"""
    verdicts = {v["target"]: v["met"] for v in report["verdicts"]}
    keeps = [met for target, met in verdicts.items() if target.startswith("the merged model keeps")]
    if all(keeps):
        claim = (
            "agrees with the claim that the merge keeps what both parents learned: on each of A "
            "and B it beats the base and the parent fine-tuned on the other corpus"
        )
    elif any(keeps):
        claim = (
            "agrees only in part: the merge keeps what one parent learned, not the other's "
            "(see Targets)"
        )
    else:
        claim = (
            "does not agree: on neither A nor B does the merge beat both the base and the "
            "parent fine-tuned on the other corpus"
        )
    restored = [met for target, met in verdicts.items() if target.startswith("after a short")]
    if restored:
        claim += (
            "; after the short mixed fine-tune it is as good as the specialists on both"
            if all(restored)
            else "; after the short mixed fine-tune it is still behind a specialist"
        )
    return f"at this scale, our result {claim}."
