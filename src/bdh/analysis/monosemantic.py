"""Monosemanticity: neurons (and synapses of rho) that respond to one concept group.

Each word of a group is read in a fixed template ("the {word}"); a neuron's feature is
its mean x_sparse activation over the word's tokens, a synapse's feature is its entry of
rho (one layer) after the word. A unit is selective for group g when its in-group
values are larger than its values on the other groups' words: one-sided Mann-Whitney U
test, Bonferroni-corrected over groups x tested units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr
from scipy.stats import rankdata
from torch import nn

from bdh.analysis.capture import capture_activations
from bdh.errors import BDHError
from bdh.tokenizers import Tokenizer

# The seed's groups, then groups whose words occur in tiny Shakespeare (each at least
# 28 times). Editable in the app and through `bdh analyze --groups FILE.json`.
DEFAULT_CONCEPT_GROUPS: dict[str, list[str]] = {
    "Currencies": ["dollar", "euro", "yen", "pound", "franc", "rupee", "yuan", "peso"],
    "Countries": ["france", "india", "japan", "brazil", "canada", "egypt", "mexico", "spain"],
    "Animals": ["cat", "dog", "bird", "fish", "wolf", "bear", "deer", "frog"],
    "Verbs": ["run", "jump", "walk", "swim", "read", "write", "speak", "think"],
    "Nobility": ["king", "queen", "prince", "duke", "lord", "lady", "earl", "noble"],
    "Family": ["father", "mother", "son", "daughter", "brother", "sister", "wife", "husband"],
    "Body": ["hand", "heart", "eye", "head", "blood", "tongue", "face", "arm"],
    "Names": ["romeo", "juliet", "richard", "henry", "edward", "warwick", "clarence", "angelo"],
}
DEFAULT_TEMPLATE = "the {word}"


def parse_groups(text: str) -> dict[str, list[str]]:
    """Groups from lines 'Name: word, word, ...' (blank lines ignored)."""
    groups: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, words = line.partition(":")
        items = [w.strip() for w in words.split(",") if w.strip()]
        if not sep or not name.strip() or not items:
            raise BDHError(f"concept group line {number} must read 'Name: word, word, ...'")
        groups[name.strip()] = items
    return groups


def format_groups(groups: dict[str, list[str]]) -> str:
    return "\n".join(f"{name}: {', '.join(words)}" for name, words in groups.items())


def _check_groups(groups: dict[str, list[str]]) -> None:
    if len(groups) < 2:
        raise BDHError("monosemanticity needs at least two concept groups")
    for name, words in groups.items():
        if len(words) < 2:
            raise BDHError(f"concept group {name!r} needs at least two words")


@torch.no_grad()
def word_features(
    model: nn.Module,
    tokenizer: Tokenizer,
    words: list[str],
    unit: str = "neuron",
    layer: int | None = None,
    template: str = DEFAULT_TEMPLATE,
) -> np.ndarray:
    """Features [W, U] of each word.

    unit="neuron": mean x_sparse over the word's tokens, U = L*H*N (layer-major, then head).
    unit="synapse": rho of `layer` (default: last) after the word, U = H*N*D.
    """
    if "{word}" not in template:
        raise BDHError("the template must contain {word}")
    prefix = template.split("{word}")[0]
    device = next(model.parameters()).device
    rows = []
    for word in words:
        ids = tokenizer.encode(template.format(word=word))
        n_word = len(ids) - len(tokenizer.encode(prefix)) if prefix else len(ids)
        idx = torch.tensor([ids], device=device)
        if unit == "neuron":
            x = capture_activations(model, idx, ("x",))["x"][:, 0]  # L, H, T, N
            rows.append(x[:, :, -max(n_word, 1) :].mean(dim=2).reshape(-1))
        elif unit == "synapse":
            level = model.config.n_layer - 1 if layer is None else layer
            _, state = model.prefill(idx, model.init_state(1))
            rows.append(state.kv[level, 0].float().cpu().reshape(-1))
        else:
            raise BDHError(f"unit must be 'neuron' or 'synapse', got {unit!r}")
    return torch.stack(rows).numpy()


@dataclass
class MonosemanticResult:
    """Per-unit selectivity over concept groups.

    group_means [G, U]; selectivity [U] = max_g mean_g / sum_g mean_g (1: one group only,
    1/G: no preference; 0 for silent units); preferred [U] group index; p_values [G, U]
    (one-sided Mann-Whitney, in-group > out-of-group); alpha: the corrected threshold.
    """

    groups: list[str]
    group_means: np.ndarray
    selectivity: np.ndarray
    preferred: np.ndarray
    p_values: np.ndarray
    alpha: float
    n_tested: int
    significant_per_group: dict[str, int]
    significant_shuffled: int
    unit_shape: tuple[int, ...] = field(default=())

    def unit_index(self, unit: int) -> list[int]:
        """Multi-index of a flat unit (layer, head, neuron) or (head, neuron, dim)."""
        return (
            [int(i) for i in np.unravel_index(unit, self.unit_shape)] if self.unit_shape else [unit]
        )

    def top_units(self, k: int = 20) -> list[dict[str, Any]]:
        """The k units with the smallest p-value for their preferred group."""
        best = self.p_values[self.preferred, np.arange(self.preferred.size)]
        order = np.lexsort((-self.selectivity, best))[:k]
        return [
            {
                "unit": int(u),
                "index": self.unit_index(int(u)),
                "group": self.groups[self.preferred[u]],
                "selectivity": float(self.selectivity[u]),
                "p_value": float(best[u]),
                "significant": bool(best[u] < self.alpha),
            }
            for u in order
        ]

    def to_dict(self, k: int = 20) -> dict[str, Any]:
        return {
            "groups": self.groups,
            "alpha_corrected": self.alpha,
            "units_tested": self.n_tested,
            "significant_per_group": self.significant_per_group,
            "significant_total": int(sum(self.significant_per_group.values())),
            "significant_with_shuffled_labels": self.significant_shuffled,
            "mean_selectivity_of_active_units": float(self.selectivity[self.selectivity > 0].mean())
            if (self.selectivity > 0).any()
            else 0.0,
            "top_units": self.top_units(k),
        }


def mann_whitney_greater(features: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """One-sided Mann-Whitney U p-values (rows `inside` larger than the other rows).

    features [W, U]; inside: bool [W] or [G, W] (one test per row of masks) -> p [U] or
    [G, U]. Normal approximation with tie and continuity corrections, as
    scipy.stats.mannwhitneyu(..., method="asymptotic"), vectorized over columns and
    sharing one ranking between masks. Constant columns get p = 1.
    """
    masks = np.atleast_2d(inside).astype(bool)
    W, U = features.shape
    n1 = masks.sum(axis=1, keepdims=True).astype(np.float64)  # G, 1
    n2 = W - n1
    if (n1 == 0).any() or (n2 == 0).any():
        raise BDHError("a concept group needs words inside and outside it")
    ranks = rankdata(features, axis=0)
    u1 = masks.astype(np.float64) @ ranks - n1 * (n1 + 1) / 2  # G, U
    # Tie correction: sum over tie groups of t^3 - t, per column.
    ordered = np.sort(features, axis=0)
    starts = np.vstack([np.ones((1, U), bool), np.diff(ordered, axis=0) != 0])
    group = np.cumsum(starts, axis=0) - 1 + np.arange(U) * W
    sizes = np.bincount(group.ravel(), minlength=U * W).reshape(U, W).astype(np.float64)
    ties = (sizes**3 - sizes).sum(axis=1)  # U
    variance = n1 * n2 / 12.0 * ((W + 1) - ties / (W * (W - 1)))  # G, U
    z = (u1 - n1 * n2 / 2.0 - 0.5) / np.sqrt(np.where(variance > 0, variance, 1.0))
    p = np.where(variance > 0, ndtr(-z), 1.0)
    return p if np.ndim(inside) == 2 else p[0]


@dataclass
class MannWhitneyTest:
    """One one-sided Mann-Whitney U test of `inside` > `outside`.

    u: the U statistic of `inside` (of n_inside * n_outside pairs, ties counted half);
    rank_biserial = 2 u / (n_inside n_outside) - 1, in [-1, 1] (1: every inside value above
    every outside one); p_value from scipy.stats.mannwhitneyu (exact for small samples
    without ties, else the normal approximation).
    """

    u: float
    n_inside: int
    n_outside: int
    p_value: float
    rank_biserial: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "U": self.u,
            "U_max": self.n_inside * self.n_outside,
            "n_inside": self.n_inside,
            "n_outside": self.n_outside,
            "p_value": self.p_value,
            "rank_biserial": self.rank_biserial,
        }


def mann_whitney_test(inside: np.ndarray, outside: np.ndarray) -> MannWhitneyTest:
    """Are the values `inside` larger than those `outside`? One-sided Mann-Whitney U."""
    from scipy.stats import mannwhitneyu

    inside, outside = np.asarray(inside, np.float64), np.asarray(outside, np.float64)
    if not inside.size or not outside.size:
        raise BDHError("a Mann-Whitney test needs values on both sides")
    result = mannwhitneyu(inside, outside, alternative="greater")
    u, pairs = float(result.statistic), inside.size * outside.size
    return MannWhitneyTest(
        u=u, n_inside=inside.size, n_outside=outside.size,
        p_value=float(result.pvalue), rank_biserial=2.0 * u / pairs - 1.0,
    )  # fmt: skip


def _p_values(features: np.ndarray, labels: np.ndarray, n_groups: int) -> np.ndarray:
    return mann_whitney_greater(features, labels[None, :] == np.arange(n_groups)[:, None])


def selectivity_analysis(
    features: np.ndarray,
    labels: np.ndarray,
    groups: list[str],
    alpha: float = 0.05,
    seed: int = 0,
    unit_shape: tuple[int, ...] = (),
) -> MonosemanticResult:
    """Selectivity and significance of units given features [W, U] and labels [W] in 0..G-1."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    G = len(groups)
    means = np.stack([features[labels == g].mean(axis=0) for g in range(G)])  # G, U
    positive = np.clip(means, 0, None)
    total = positive.sum(axis=0)
    selectivity = np.divide(positive.max(axis=0), total, out=np.zeros_like(total), where=total > 0)
    tested = features.std(axis=0) > 0
    n_tested = int(tested.sum())
    corrected = alpha / max(G * n_tested, 1)
    p = _p_values(features, labels, G)
    shuffled = np.random.default_rng(seed).permutation(labels)
    p_null = _p_values(features, shuffled, G)
    return MonosemanticResult(
        groups=list(groups),
        group_means=means,
        selectivity=selectivity,
        preferred=means.argmax(axis=0),
        p_values=p,
        alpha=corrected,
        n_tested=n_tested,
        significant_per_group={
            name: int((p[g] < corrected).sum()) for g, name in enumerate(groups)
        },
        significant_shuffled=int((p_null < corrected).sum()),
        unit_shape=unit_shape,
    )


def monosemanticity(
    model: nn.Module,
    tokenizer: Tokenizer,
    groups: dict[str, list[str]] | None = None,
    unit: str = "neuron",
    layer: int | None = None,
    template: str = DEFAULT_TEMPLATE,
    alpha: float = 0.05,
) -> MonosemanticResult:
    """Feed every group's words through a BDH model and test each unit's selectivity."""
    groups = groups or DEFAULT_CONCEPT_GROUPS
    _check_groups(groups)
    words = [w for ws in groups.values() for w in ws]
    labels = np.array([g for g, ws in enumerate(groups.values()) for _ in ws])
    features = word_features(model, tokenizer, words, unit, layer, template)
    c = model.config
    shape = (
        (c.n_layer, c.n_head, c.neurons_per_head)
        if unit == "neuron"
        else (c.n_head, c.neurons_per_head, c.n_embd)
    )
    return selectivity_analysis(features, labels, list(groups), alpha, unit_shape=shape)
