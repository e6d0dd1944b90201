"""Mode "hebbian" learns by local rules only: each rule against its equation on numbers
worked by hand, no gradient anywhere, and a short run that lowers the validation loss."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bdh.learning import make_learning_rule
from bdh.registry import NO_METRICS, PlasticSite, Probe

pytestmark = pytest.mark.usefixtures("single_thread")


class ToyReadout(torch.nn.Module):
    """x -> hidden = x @ D (predictive, taught by the embedding E) -> logits = hidden @ W (delta)."""

    model_type = "toy-readout"
    config_class = dict
    context_field = None
    bdh_analyses = False
    mlp_probe = None
    sparsity_probes = ()
    cpu_bf16_pays = False
    carries_state = False
    probe_points = {}
    plastic_sites = (
        PlasticSite("D", "matmul", pre=Probe("d_in"), post=Probe("d_out"), rule="predictive", teacher="E"),
        PlasticSite("W", "matmul", pre=Probe("w_in"), post=Probe("w_out"), rule="delta"),
    )  # fmt: skip
    prunable = ("D", "W")
    plasticity_metrics = NO_METRICS

    def __init__(self, D: list, W: list, E: list):
        super().__init__()
        self.D = torch.nn.Parameter(torch.tensor(D, dtype=torch.float32))
        self.W = torch.nn.Parameter(torch.tensor(W, dtype=torch.float32))
        self.E = torch.nn.Parameter(torch.tensor(E, dtype=torch.float32))
        self.d_in, self.d_out, self.w_in, self.w_out = (torch.nn.Identity() for _ in range(4))

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        hidden = self.d_out(self.d_in(x) @ self.D)
        return self.w_out(self.w_in(hidden) @ self.W), None

    def init_state(self, batch_size, device=None, dtype=None):
        raise NotImplementedError("the toy family has no recurrent form")

    prefill = step = init_state


def test_delta_and_predictive_rules_equal_their_equations_by_hand():
    # one sample: a = [1, 0], D = I (hidden = a), W = 0 (logits 0, q = 1/3 each), target 1
    model = ToyReadout(D=[[1.0, 0.0], [0.0, 1.0]], W=[[0.0] * 3] * 2, E=[[0, 0], [3, 1], [0, 0]])
    rule = make_learning_rule("hebbian", hebbian_lr=1.0, readout_lr=0.3, predictive_lr=0.5)
    rule.attach(model.train())
    with torch.no_grad():
        model(torch.tensor([[[1.0, 0.0]]]), torch.tensor([[1]]))
    rule.after_step(model, 1, rate_scale=0.5)
    # delta: dW = 0.3 * 0.5 * a (onehot(1) - q)^T = 0.15 * [1, 0]^T [-1/3, 2/3, -1/3]
    expected_W = [[-0.05, 0.1, -0.05], [0.0, 0.0, 0.0]]
    torch.testing.assert_close(model.W.detach(), torch.tensor(expected_W))
    # predictive: e = LN(E[1]) = LN([3, 1]) = [1, -1] / sqrt(1 + 1e-5); hidden p = a
    # dD = 0.5 * 0.5 * a (e - p)^T / ||a||^2 = 0.25 * [1, 0]^T [1/s - 1, -1/s]
    s = math.sqrt(1 + 1e-5)
    expected_D = [[1.0 + 0.25 * (1 / s - 1), -0.25 / s], [0.0, 1.0]]
    torch.testing.assert_close(model.D.detach(), torch.tensor(expected_D))
    assert torch.equal(model.E.detach(), torch.tensor([[0.0, 0], [3, 1], [0, 0]]))  # no rule


def test_delta_rules_need_targets_and_act_in_hebbian_mode_only():
    def toy():
        return ToyReadout(D=[[1.0, 0.5], [0.0, 1.0]], W=[[0.1, 0.2, 0.3]] * 2, E=[[1.0, 2.0]] * 3)

    x, y = torch.tensor([[[1.0, 2.0]]]), torch.tensor([[2]])
    model = toy().train()
    rule = make_learning_rule("hebbian")
    rule.attach(model)
    with torch.no_grad():
        model(x)  # no targets: no teacher, no update
    rule.after_step(model, 1)
    assert torch.equal(model.W.detach(), toy().W.detach())
    model = toy().train()
    rule = make_learning_rule("hybrid")  # backprop trains readout and decoder here
    rule.attach(model)
    model(x, y)
    assert rule.sites == {} and rule.after_step(model, 1)["hebbian_update"] == 0.0


class ToyUnits(torch.nn.Module):
    """post = relu(W @ pre), W [2, 2] (nn.Linear layout), for Oja and homeostasis by hand."""

    model_type = "toy-units"
    config_class = dict
    context_field = None
    bdh_analyses = False
    mlp_probe = None
    sparsity_probes = ()
    cpu_bf16_pays = False
    carries_state = False
    probe_points = {}
    plastic_sites = (PlasticSite("W", "linear", pre=Probe("pre"), post=Probe("post")),)
    prunable = ("W",)
    plasticity_metrics = NO_METRICS

    def __init__(self, W: list):
        super().__init__()
        self.W = torch.nn.Parameter(torch.tensor(W, dtype=torch.float32))
        self.pre, self.post = torch.nn.Identity(), torch.nn.Identity()

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        return self.post(torch.relu(self.pre(x) @ self.W.t())), None

    def init_state(self, batch_size, device=None, dtype=None):
        raise NotImplementedError("the toy family has no recurrent form")

    prefill = step = init_state


def test_oja_rule_by_hand():
    # pre a = [1, 1]; unit 0: W_0 = [0.5, 0.25], p_0 = 0.75; unit 1: W_1 = [-1, 0], p_1 = 0
    model = ToyUnits([[0.5, 0.25], [-1.0, 0.0]]).train()
    rule = make_learning_rule("hebbian", hebbian_lr=0.1)
    rule.attach(model)
    with torch.no_grad():
        model(torch.tensor([[1.0, 1.0]]))
    rule.after_step(model, 1, rate_scale=0.0)  # the schedule does not scale Oja's rate
    # dW_0 = 0.1 * (0.75 * [1, 1] - 0.5625 * [0.5, 0.25]) = [0.046875, 0.0609375]
    expected = [[0.546875, 0.3109375], [-1.0, 0.0]]
    torch.testing.assert_close(model.W.detach(), torch.tensor(expected))


def test_homeostasis_and_pruning_by_hand():
    # unit activities |p| = [1, 3] (W = diag(1, 3), a = [1, 1]): mean 2, so the factors
    # are clamp((2/1)^0.1) = clamp(1.0718) = 1.05 and (2/3)^0.1 = 0.96026
    model = ToyUnits([[1.0, 0.0], [0.0, 3.0]]).train()
    rule = make_learning_rule(
        "backprop", homeostatic_scaling=True, prune_every=1, prune_threshold=0.5
    )
    rule.attach(model)
    with torch.no_grad():
        model(torch.tensor([[1.0, 1.0]]))
    metrics = rule.after_step(model, 1)
    factor = (2 / 3) ** 0.1
    torch.testing.assert_close(model.W.detach(), torch.tensor([[1.05, 0.0], [0.0, 3 * factor]]))
    assert metrics["homeostatic_spread"] == pytest.approx(0.5)  # |1 - 2| / 2
    assert metrics["weight_sparsity"] == 0.5  # the two zeros are below 0.5 and stay pruned


def tiny_hebbian_config(tmp_path, **changes):
    train_mod = pytest.importorskip("bdh.train")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log. " * 60)
    base = dict(
        model="bdh", preset="tiny", model_overrides={"n_layer": 2, "n_embd": 32, "n_head": 2},
        data=str(corpus), steps=30, batch_size=8, block_size=32, lr=3e-3, warmup_steps=0,
        eval_every=5, eval_tokens=256, log_every=5, checkpoint_every=30, progress=False,
        device="cpu", precision="fp32", out_dir=str(tmp_path / "run"), learning_mode="hebbian",
        hebbian_lr=1e-4,
    )  # fmt: skip
    return train_mod, train_mod.TrainConfig(**{**base, **changes})


def test_hebbian_training_never_backpropagates_and_lowers_the_validation_loss(
    tmp_path, monkeypatch
):
    import bdh.learning

    def no_backward(*args, **kwargs):
        raise AssertionError("backward called in hebbian mode")

    monkeypatch.setattr(torch.Tensor, "backward", no_backward)
    monkeypatch.setattr(torch.autograd, "backward", no_backward)
    checked = []
    after_step = bdh.learning.LearningRule.after_step

    def checking_after_step(self, model, *args, **kwargs):
        checked.append(all(p.grad is None for p in model.parameters()))
        return after_step(self, model, *args, **kwargs)

    monkeypatch.setattr(bdh.learning.LearningRule, "after_step", checking_after_step)
    train_mod, cfg = tiny_hebbian_config(tmp_path)
    run = train_mod.train(cfg)
    assert len(checked) == 30 and all(checked)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in lines if "val_loss" in r]
    assert val[0] < math.log(256)  # the first 5 steps already learned something
    assert val[-1] < val[0] - 0.5, val  # and learning went on
