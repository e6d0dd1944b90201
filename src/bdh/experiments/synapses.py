"""`bdh experiment synapses`: the synapse readout (§6.2-6.3, Eq. 16), its degree
distribution (Fig. 11) and monosemantic synapses.

1. sigma_{t-1,l} (`bdh.analysis.synapses`) over a validation text: per layer (>= 1) and
   head, the thresholded matrix as a graph, its out/in-degree distribution on log-log axes
   against an Erdos-Renyi graph of the same density, and heavy-tail statistics.
2. Selectivity: for each concept, sentences with a concept word against sentences with a
   contrast word in the same slot of the same templates. Templates and words are split in
   halves: candidates (the synapses most selective for the concept) are picked on the
   selection split, then tested on held-out sentences (other templates, other words) with
   a one-sided Mann-Whitney U test, rank-biserial r and p. The same pipeline on shuffled
   labels is the control that must come out null.

Writes `report.md`, `report.json`, `degree_distribution.png` and `selectivity.png` into
the output directory (a model trained for it goes to OUT/runs/model).
"""

from __future__ import annotations

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

# Templates whose slot holds a person, and templates whose slot holds a thing of "my".
PERSON_TEMPLATES = [
    "the {w} is come to the gate.", "I saw the {w} upon the hill.", "where is the {w} now?",
    "bring the {w} hither.", "the {w} doth speak of war.", "go tell the {w} I am here.",
    "the {w} hath sent for thee.", "what said the {w} to you?", "let the {w} come in.",
    "the {w} will not stay.", "did the {w} weep?", "O, the {w} is dead!",
    "we must obey the {w}.", "the {w} sleeps within.", "call the {w} to me.",
    "the {w} hath a fair name.", "I will follow the {w}.", "here comes the {w}.",
    "the {w} is gone to bed.", "speak to the {w}, good sir.",
]  # fmt: skip
POSSESSION_TEMPLATES = [
    "I give thee my {w}.", "my {w} is cold tonight.", "look upon my {w}.",
    "he took my {w} from me.", "my {w} shall be thine.", "what ails my {w}?",
    "I lay my {w} at your feet.", "by my {w}, I swear it.", "my {w} is wet with rain.",
    "they have seen my {w}.", "keep my {w} safe.", "O my poor {w}!",
    "my {w} was hurt in the fight.", "she kissed my {w}.", "I have lost my {w}.",
    "my {w} is heavy.", "is this my {w}?", "mark my {w} well.", "my {w} is all I have.",
    "let my {w} rest here.",
]  # fmt: skip


@dataclass(frozen=True)
class Concept:
    """Concept words against contrast words in the same template slots; words in the
    order they are split (alternately: even positions select, odd positions test)."""

    name: str
    words: tuple[str, ...]
    contrast_name: str
    contrast: tuple[str, ...]
    templates: tuple[str, ...]


CONCEPTS = (
    Concept(
        "royalty", ("king", "queen", "prince", "duke", "lord", "lady", "earl", "princess",
                    "duchess", "sovereign"),
        "commoners", ("man", "woman", "boy", "girl", "friend", "servant", "soldier", "citizen",
                      "fellow", "maid"),
        tuple(PERSON_TEMPLATES),
    ),
    Concept(
        "body", ("hand", "heart", "eye", "head", "blood", "tongue", "face", "arm", "breast",
                 "brow"),
        "objects", ("sword", "horse", "house", "letter", "gold", "ring", "book", "cloak",
                    "purse", "door"),
        tuple(POSSESSION_TEMPLATES),
    ),
)  # fmt: skip

# `--smoke`: seconds, to test the pipeline (a few training steps, short text, few sentences).
SMOKE: dict[str, Any] = dict(
    recipe=SMOKE_RECIPE,
    text_tokens=64,
    templates=4,
    words=4,
    candidates=3,
)


@dataclass
class SynapseSettings:
    out_dir: str
    checkpoint: str | None = None
    recipe: ModelRecipe = field(default_factory=ModelRecipe)
    text_tokens: int = 2048  # validation text the degree distribution is read over
    k_sigma: float = 3.0  # edges: entries above mean + k_sigma std of each head's sigma
    templates: int = 20  # templates used per concept (half select, half test)
    words: int = 10  # words used per side (half select, half test)
    candidates: int = 10  # synapses carried from selection to the held-out test
    alpha: float = 0.05
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.templates < 2 or self.words < 2 or self.candidates < 1 or self.text_tokens < 2:
            raise ConfigError(
                "synapses needs at least 2 templates, 2 words, 1 candidate and a text of 2 tokens"
            )
        most = min(len(PERSON_TEMPLATES), len(POSSESSION_TEMPLATES))
        if self.templates > most or self.words > min(len(c.words) for c in CONCEPTS):
            raise ConfigError(f"at most {most} templates and 10 words per side are defined")


def sentences(
    c: Concept, s: SynapseSettings, split: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The texts of one split (0: selection, 1: held-out), their labels (True: concept)
    and the index of the word each holds (its sentences are not independent samples)."""
    templates = c.templates[: s.templates][split::2]
    texts, labels, word_ids = [], [], []
    chosen = [(w, label) for ws, label in ((c.words, True), (c.contrast, False)) for w in ws[: s.words][split::2]]  # fmt: skip
    for index, (word, label) in enumerate(chosen):
        for template in templates:
            texts.append(template.format(w=word))
            labels.append(label)
            word_ids.append(index)
    return texts, np.array(labels), np.array(word_ids)


def _test_candidates(
    cands: list[Any], held: list[Any], labels: np.ndarray, alpha: float, words: np.ndarray | None
) -> list[dict[str, Any]]:
    """Each candidate on the held-out sentences; with `words`, also on the words' mean
    values (one sample per word: the test that does not count a word's sentences as
    independent)."""
    from bdh.analysis.monosemantic import mann_whitney_test

    rows = []
    for cand in cands:
        values = np.array([a.synapse(cand.layer, cand.head, cand.i, cand.j) for a in held])
        test = mann_whitney_test(values[labels], values[~labels])
        by_word = None
        if words is not None:
            ids = np.unique(words)
            means = np.array([values[words == w].mean() for w in ids])
            inside = np.array([labels[words == w][0] for w in ids])
            by_word = mann_whitney_test(means[inside], means[~inside]).to_dict()
        rows.append({
            **cand.to_dict(),
            "held_out": test.to_dict(),
            "held_out_by_word": by_word,
            "significant": test.p_value < alpha / len(cands),
            "values_concept": values[labels].tolist(),
            "values_contrast": values[~labels].tolist(),
        })  # fmt: skip
    return rows


def selectivity(model: Any, tokenizer: Any, c: Concept, s: SynapseSettings) -> dict[str, Any]:
    """Pick candidates on the selection split, test them on held-out sentences; the same
    with labels shuffled in both splits (the null control), and the in-sample (double
    dipping) p of the best shuffled candidate for contrast."""
    from bdh.analysis.monosemantic import mann_whitney_test
    from bdh.analysis.synapses import select_candidates, synapse_activity

    rng = np.random.default_rng(s.seed)
    (sel_texts, sel_labels, _), (test_texts, test_labels, test_words) = (
        sentences(c, s, 0),
        sentences(c, s, 1),
    )
    sel = [synapse_activity(model, tokenizer.encode(t)) for t in sel_texts]
    held = [synapse_activity(model, tokenizer.encode(t)) for t in test_texts]
    result: dict[str, Any] = {
        "concept": c.name,
        "contrast": c.contrast_name,
        "selection": {"sentences": len(sel_texts), "words": sorted(set(c.words[: s.words][0::2]) | set(c.contrast[: s.words][0::2]))},
        "held_out": {"sentences": len(test_texts), "words": sorted(set(c.words[: s.words][1::2]) | set(c.contrast[: s.words][1::2]))},
        "examples": [sel_texts[0], sel_texts[-1], test_texts[0], test_texts[-1]],
    }  # fmt: skip
    for name, labels_sel, labels_test, words in (
        ("true_labels", sel_labels, test_labels, test_words),
        ("shuffled_labels", rng.permutation(sel_labels), rng.permutation(test_labels), None),
    ):
        cands = select_candidates(sel, labels_sel, s.candidates)
        rows = _test_candidates(cands, held, labels_test, s.alpha, words)
        best = cands[0]
        in_sample = np.array([a.synapse(best.layer, best.head, best.i, best.j) for a in sel])
        dipped = mann_whitney_test(in_sample[labels_sel], in_sample[~labels_sel])
        result[name] = {
            "candidates": rows,
            "best": rows[0],
            "significant_held_out": int(sum(r["significant"] for r in rows)),
            "best_tested_in_sample": dipped.to_dict(),
        }
    return result


def run_synapses(
    settings: SynapseSettings, force: bool = False, command: str = "bdh experiment synapses"
) -> dict[str, Any]:
    """Get the model, read sigma over the text, test the concepts, write the report."""
    import torch

    from bdh.analysis.synapses import synapse_activity, synapse_graph_stats
    from bdh.data import load_corpus

    out = ReportDir(settings.out_dir, force)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    machine = machine_info()
    model, tokenizer, provenance = experiment_model(
        settings.checkpoint, settings.recipe, out.path("runs") / "model"
    )
    data = provenance.get("recipe", {}).get("data") or (provenance.get("train_config") or {}).get(
        "data"
    )
    corpus, _ = load_corpus(data, tokenizer)
    ids = [int(t) for t in corpus.val[: settings.text_tokens]]
    graph = synapse_graph_stats(synapse_activity(model, ids), settings.k_sigma)
    # The same readout of an untrained model of the same shape: what activity statistics
    # alone (neurons that fire more often) give the degrees, before any learning.
    untrained = untrained_twin(provenance, settings.seed)
    graph_untrained = synapse_graph_stats(synapse_activity(untrained, ids), settings.k_sigma)
    concepts = [selectivity(model, tokenizer, c, settings) for c in CONCEPTS]
    report = {
        "command": command,
        "settings": asdict(settings),
        "machine": machine,
        "model": provenance,
        "text": {"source": f"validation split of {corpus.source}", "tokens": len(ids)},
        "damping": None if model.attn.decay is None else model.attn.decay.tolist(),
        "degree_distribution": graph,
        "degree_distribution_untrained": graph_untrained,
        "concepts": concepts,
    }
    _plot_degrees(graph, out.path("degree_distribution.png"))
    _plot_selectivity(concepts, out.path("selectivity.png"))
    out.write_json("report.json", report)
    out.write_text("report.md", markdown_report(report))
    return report


def _ccdf(degrees: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Degrees k >= 1 and the share of nodes with degree >= k."""
    values = np.sort(np.asarray(degrees))
    ks = np.unique(values[values > 0])
    return ks, np.array([(values >= k).mean() for k in ks])


def _plot_degrees(graph: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key in zip(axes, ("out", "in")):
        for r in graph["layers"]:
            degrees = np.array(r[f"{key}_degrees"])
            ks, share = _ccdf(degrees)
            line = ax.loglog(ks, share, marker=".", lw=1, label=f"layer {r['layer']}")[0]
            er = rng.binomial(r["nodes_per_head"] - 1, r["density"], size=degrees.size)
            ks_er, share_er = _ccdf(er)
            ax.loglog(ks_er, share_er, ls=":", color=line.get_color(), lw=1)
        ax.set_xlabel(f"{key}-degree k")
        ax.set_ylabel("share of neurons with degree >= k")
        ax.set_title(f"sigma, thresholded at mean + {graph['k_sigma']:g} std: {key}-degrees")
    axes[0].legend(fontsize=8, title="dotted: Erdos-Renyi, same density", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_selectivity(concepts: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 * len(concepts), figsize=(4 * len(concepts) * 2, 3.8))
    for k, c in enumerate(concepts):
        for m, key in enumerate(("true_labels", "shuffled_labels")):
            ax = axes[2 * k + m]
            best = c[key]["best"]
            ax.boxplot([best["values_concept"], best["values_contrast"]])
            ax.set_xticks([1, 2], [c["concept"], c["contrast"]] if key == "true_labels"
                          else ["shuffled A", "shuffled B"])  # fmt: skip
            t = best["held_out"]
            ax.set_title(
                f"{c['concept']}{' (shuffled)' if m else ''}: synapse {best['synapse']}\n"
                f"held out U={t['U']:.0f}/{t['U_max']}, r={t['rank_biserial']:.2f}, p={t['p_value']:.1e}",
                fontsize=8,
            )
            ax.set_ylabel("sigma after the sentence")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _in_short(report: dict[str, Any]) -> str:
    """One paragraph: where our numbers agree with the paper's claims and where not."""
    trained = report["degree_distribution"]["layers"]
    untrained = {r["layer"]: r for r in report["degree_distribution_untrained"]["layers"]}

    def ratio(r: dict[str, Any], key: str) -> float:
        d = r[f"{key}_degree"]
        return d["cv"] / d["erdos_renyi_cv"] if d["erdos_renyi_cv"] else 0.0

    heavy = all(ratio(r, k) > 2 for r in trained for k in ("out", "in"))
    learned = [k for k in ("out", "in")
               if all(ratio(r, k) > ratio(untrained[r["layer"]], k) for r in trained)]  # fmt: skip
    tail = (
        ("Heavy-tailed degrees (Fig. 11): **yes**, in every layer and both directions"
         if heavy else "Heavy-tailed degrees (Fig. 11): **not in every layer and direction**")
        + "; but the untrained readout is heavy-tailed too, so the tail is mostly the readout's "
        "own (frequent firers get many strong synapses)"
        + (f"; training widens the {' and '.join(learned)}-degree tail beyond it." if learned
           else "; training does not widen it.")
    )  # fmt: skip
    parts = []
    for c in report["concepts"]:
        b = c["true_labels"]["best"]
        t, w = b["held_out"], b["held_out_by_word"]
        word_ok = w is not None and w["p_value"] < report["settings"]["alpha"]
        if b["significant"] and word_ok:
            parts.append(
                f"{c['concept']}: **a monosemantic synapse**, held out by sentence "
                f"(r = {t['rank_biserial']:.2f}) and by word"
            )
        elif b["significant"]:
            parts.append(
                f"{c['concept']}: **selective on held-out sentences** (r = "
                f"{t['rank_biserial']:.2f}, p = {_fmt_p(t['p_value'])}) **but not word by "
                f"word** (p = {_fmt_p(w['p_value'])}): it fires for some of the concept's "
                "words, not for the concept"
            )
        else:
            parts.append(f"{c['concept']}: **no selective synapse** on held-out sentences")
    nulls = all(c["shuffled_labels"]["significant_held_out"] == 0 for c in report["concepts"])
    return (
        "**In short.** " + tail + " Monosemantic synapses (§6.3, the paper's currency synapse "
        "at U = 2368 of 2500, rank-biserial 0.89): " + "; ".join(parts) + ". The shuffled "
        "control is "
        + ("null in every case" if nulls else "**not null**, so the test is not to be trusted")
        + ". So ours is weaker than the paper's result; the model is a tiny one trained for "
        "minutes, and the same command reads a larger checkpoint (`--checkpoint`)."
    )


def _fmt_p(p: float) -> str:
    return f"{p:.2e}"


def markdown_report(report: dict[str, Any]) -> str:
    s, m, g = report["settings"], report["machine"], report["degree_distribution"]
    lines = [
        "# Synapse readout (paper §6.2-6.3, Eq. 16) and monosemantic synapses",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores (shared), {m['threads']} torch threads, torch "
        f"{m['torch']}, load average at the start {m['load_average'][0]:.2f}.",
        "",
        describe_model(report["model"]),
        "",
        "The readout: sigma_{t-1,l}[i, j] = sum_{tau<t} U^(t-1-tau) y_{tau,l-1}[i] x_{tau,l}[j] "
        "per head, y the layer's sparse output (`x_sparse * y_sparse`), x its `x_sparse`, for "
        "layers 1.. (layer 0 has no layer before it). "
        + ("Damping is off (U = 1). " if report["damping"] is None else f"Damping U = {report['damping']}. ")
        + "The exponent follows the model's own state update (tested: the same sum with RoPE "
        "keys and the layer input as values rebuilds the model's rho to 1e-12 in fp64); the "
        "paper's U^(t-tau) differs by one constant factor per head. x and y are ReLU outputs, "
        "so sigma is non-negative and its positive part is all of it.",
        "",
        "## Degree distribution of the thresholded sigma (Fig. 11)",
        "",
        f"Text: the first {report['text']['tokens']:,} tokens of the {report['text']['source']}. "
        f"Edges: entries above the mean + {g['k_sigma']:g} std of each head's matrix (self-loops "
        "excluded); degrees pooled over heads. CV: the degrees' coefficient of variation; an "
        "Erdos-Renyi graph of the same density has the CV in the next column.",
        "",
        "| model | layer | nonzero entries | edges | density | out: max / mean | out: CV (ER) | out: top 5% share | in: max / mean | in: CV (ER) | in: top 5% share | weight excess kurtosis |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    rows = [("trained", r) for r in g["layers"]]
    rows += [("untrained", r) for r in report["degree_distribution_untrained"]["layers"]]
    for which, r in rows:
        o, i = r["out_degree"], r["in_degree"]
        lines.append(
            f"| {which} | {r['layer']} | {100 * r['nonzero_fraction']:.1f}% | {r['n_edges']:,} | "
            f"{100 * r['density']:.2f}% | {o['max_degree']} / {o['mean_degree']:.1f} | "
            f"{o['cv']:.2f} ({o['erdos_renyi_cv']:.2f}) | {100 * o['top5pct_edge_share']:.0f}% | "
            f"{i['max_degree']} / {i['mean_degree']:.1f} | {i['cv']:.2f} ({i['erdos_renyi_cv']:.2f}) | "
            f"{100 * i['top5pct_edge_share']:.0f}% | {r['weight_excess_kurtosis']:.1f} |"
        )
    lines += [
        "",
        "![degree distribution](degree_distribution.png)",
        "",
        "Reading (CV over the Erdos-Renyi CV; above 1: wider than a random graph's degrees, "
        "the heavy tail of Fig. 11):",
        "",
    ]
    untrained = {r["layer"]: r for r in report["degree_distribution_untrained"]["layers"]}
    for r in g["layers"]:
        u = untrained[r["layer"]]
        parts = []
        for key in ("out", "in"):
            a, b = r[f"{key}_degree"], u[f"{key}_degree"]
            ra = a["cv"] / a["erdos_renyi_cv"] if a["erdos_renyi_cv"] else float("nan")
            rb = b["cv"] / b["erdos_renyi_cv"] if b["erdos_renyi_cv"] else float("nan")
            parts.append(f"{key}-degree {ra:.1f}x (untrained {rb:.1f}x)")
        lines.append(f"- layer {r['layer']}: " + ", ".join(parts) + ".")
    lines += [
        "",
        "The untrained rows are the same readout of a randomly initialised model of the same "
        f"shape (seed {s['seed']}): a tail there comes from the readout itself (sigma sums "
        "products of activities, so a neuron that fires often gets many strong synapses), not "
        "from learning; the trained rows show learned structure only where they differ from it.",
        "",
        "## Monosemantic synapses: selection split, held-out test, shuffled control",
        "",
        f"Per concept: {s['templates']} templates and {s['words']} words per side, split in halves "
        "(templates alternately, words alternately), so the held-out sentences share neither a "
        f"template nor a word with the selection sentences. The {s['candidates']} synapses with the "
        "smallest selection p (normal-approximation Mann-Whitney over every synapse of every layer "
        ">= 1 and head) are tested on the held-out sentences: one-sided Mann-Whitney U "
        "(scipy.stats.mannwhitneyu), rank-biserial r = 2U / (n1 n2) - 1, significant when "
        f"p < {s['alpha']} / {s['candidates']} (Bonferroni over the candidates). Control: the same "
        "pipeline with the labels shuffled in both splits (seed "
        f"{s['seed']}). A synapse's value: sigma after reading the sentence from an empty state.",
        "",
        "| concept vs contrast | labels | best synapse (layer, head, i, j) | selection p | held-out U | held-out r | held-out p | candidates significant held out | best, by word: U, p | best, tested in sample (double dipping) p |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for c in report["concepts"]:
        for key, label in (("true_labels", "true"), ("shuffled_labels", "shuffled")):
            d = c[key]
            b, t = d["best"], d["best"]["held_out"]
            w = b["held_out_by_word"]
            by_word = "n/a" if w is None else f"{w['U']:.0f} / {w['U_max']}, {_fmt_p(w['p_value'])}"
            lines.append(
                f"| {c['concept']} vs {c['contrast']} | {label} | {tuple(b['synapse'])} | "
                f"{_fmt_p(b['selection_p'])} | {t['U']:.0f} / {t['U_max']} | {t['rank_biserial']:.3f} | "
                f"{_fmt_p(t['p_value'])} | {d['significant_held_out']} / {len(d['candidates'])} | "
                f"{by_word} | {_fmt_p(d['best_tested_in_sample']['p_value'])} |"
            )
    lines += [
        "",
        "By word: the held-out test again with one value per word (the mean over its "
        "sentences), since a word's sentences are not independent samples; with few words a "
        "side its smallest possible p is 1 / C(n1 + n2, n1). Not run for the shuffled labels, "
        "which are shuffled by sentence.",
        "",
        "![selectivity](selectivity.png)",
        "",
        "Paper (§6.3, as the issue states): the currency synapse, U = 2368 of 2500, p < 1e-14, "
        "r = 0.86. (2368 / 2500 gives a rank-biserial 2U / (n1 n2) - 1 = 0.894, so the paper's "
        "r is another effect size or another count; we report the rank-biserial.)",
        "",
        "## Verdict",
        "",
    ]  # fmt: skip
    lines.append(_in_short(report))
    lines.append("")
    for c in report["concepts"]:
        tr, sh = c["true_labels"], c["shuffled_labels"]
        t = tr["best"]["held_out"]
        if tr["best"]["significant"]:
            said = (f"**a selective synapse holds on held-out sentences** (U = {t['U']:.0f} of "
                    f"{t['U_max']}, r = {t['rank_biserial']:.2f}, p = {_fmt_p(t['p_value'])}; "
                    f"{tr['significant_held_out']} of {len(tr['candidates'])} candidates significant)")  # fmt: skip
        else:
            said = (f"**no candidate holds on held-out sentences** (best: U = {t['U']:.0f} of "
                    f"{t['U_max']}, p = {_fmt_p(t['p_value'])})")  # fmt: skip
        threshold = s["alpha"] / len(sh["candidates"])
        null = (
            f"null, as it must be (no candidate below p = {threshold:g}; its best held-out p "
            f"{_fmt_p(sh['best']['held_out']['p_value'])})"
            if sh["significant_held_out"] == 0
            else f"NOT null ({sh['significant_held_out']} candidates significant)"
        )
        w = tr["best"]["held_out_by_word"]
        by_word = (
            f" By word ({w['n_inside']} against {w['n_outside']} words): U = {w['U']:.0f} of "
            f"{w['U_max']}, p = {_fmt_p(w['p_value'])}"
            + (": it holds word by word." if w["p_value"] < s["alpha"] else
               ": not significant word by word" + (
                   ", so the sentence-level p counts the same few words many times."
                   if tr["best"]["significant"] else "."))
        )  # fmt: skip
        versus = (
            "weaker than the paper's currency synapse"
            if t["U"] / max(t["U_max"], 1) < 2368 / 2500
            else "as strong as or stronger than the paper's currency synapse"
        )
        lines.append(
            f"- {c['concept']} vs {c['contrast']}: {said}; {versus} by U / U_max "
            f"({t['U'] / max(t['U_max'], 1):.3f} against 0.947).{by_word} Shuffled control: {null} "
            f"(its best candidate would look significant in sample: p = "
            f"{_fmt_p(sh['best_tested_in_sample']['p_value'])})."
        )
    lines += [
        "",
        "## What was assumed",
        "",
        "- The paper's text was not at hand: its sentence sets, templates, the layer its "
        "synapse sits in and its threshold for Fig. 11 are unknown to us; the concept groups "
        "here are ones tiny Shakespeare holds (royalty against commoners, body parts against "
        "objects), in templates of our own.",
        "- sigma is read per head (layer l-1's neuron i to layer l's neuron j of the same head); "
        "the decoder mixes heads, so cross-head pairs also exist in the model but are not read.",
    ]
    return "\n".join(lines) + "\n"
