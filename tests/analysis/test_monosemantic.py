from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from bdh.analysis import mann_whitney_greater, monosemanticity, parse_groups, selectivity_analysis
from bdh.analysis.monosemantic import format_groups
from bdh.errors import BDHError
from bdh.tokenizers import ByteTokenizer

from .conftest import tiny_bdh


def test_mann_whitney_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, (30, 50)).astype(float)
    inside = np.zeros(30, bool)
    inside[:6] = True
    expected = mannwhitneyu(
        x[inside], x[~inside], axis=0, alternative="greater", method="asymptotic"
    )
    assert np.allclose(mann_whitney_greater(x, inside), expected.pvalue)
    x[:, 3] = 2.0  # constant: nothing to rank
    assert mann_whitney_greater(x, inside)[3] == 1.0


def test_neuron_firing_for_one_group_only_is_found():
    rng = np.random.default_rng(0)
    groups = ["animals", "verbs", "places"]
    labels = np.repeat(np.arange(3), 12)
    features = np.clip(rng.normal(size=(36, 200)), 0, None)  # 200 unselective units
    features[:, 17] = 0.0
    features[labels == 1, 17] = rng.uniform(1, 2, size=12)  # unit 17 fires only for verbs
    r = selectivity_analysis(features, labels, groups)
    assert r.preferred[17] == 1
    assert r.selectivity[17] == pytest.approx(1.0)
    assert r.p_values[1, 17] < r.alpha
    assert r.significant_per_group == {"animals": 0, "verbs": 1, "places": 0}
    assert r.significant_shuffled == 0
    assert r.top_units(1)[0]["unit"] == 17 and r.top_units(1)[0]["significant"]
    assert 1 / 3 <= r.selectivity[np.arange(200) != 17].mean() < 0.6


def test_groups_text_round_trip_and_errors():
    groups = {"A": ["x", "y"], "B": ["z", "w w"]}
    assert parse_groups(format_groups(groups)) == groups
    with pytest.raises(BDHError):
        parse_groups("no colon here")
    with pytest.raises(BDHError):
        monosemanticity(tiny_bdh(), ByteTokenizer(), {"only": ["a", "b"]})


def test_monosemanticity_on_model_shapes():
    model = tiny_bdh()
    c = model.config
    groups = {"animals": ["dog", "cat", "wolf"], "kin": ["father", "mother", "son"]}
    r = monosemanticity(model, ByteTokenizer(), groups)
    assert r.p_values.shape == (2, c.n_layer * c.n_head * c.neurons_per_head)
    top = r.top_units(3)[0]
    assert len(top["index"]) == 3 and top["group"] in groups
    syn = monosemanticity(model, ByteTokenizer(), groups, unit="synapse", layer=0)
    assert syn.p_values.shape == (2, c.n_head * c.neurons_per_head * c.n_embd)
