"""Learning rules: which weights each mode changes, Oja's update, pruning masks, homeostasis."""

from __future__ import annotations

import pytest
import torch

from bdh.baselines.gpt import GPT, GPTConfig
from bdh.config import BDHConfig
from bdh.errors import ConfigError
from bdh.learning import LearningRule, make_learning_rule, prunable_parameters
from bdh.model import BDH
from bdh.neuro import BDHNeuro, BDHNeuroConfig
from bdh.registry import NO_METRICS, PlasticSite, Probe

V = 32


def tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "bdh":
        return BDH(
            BDHConfig(
                n_layer=2,
                n_embd=16,
                n_head=2,
                mlp_internal_dim_multiplier=4,
                vocab_size=V,
                dropout=0.0,
            )
        )
    if kind == "neuro":
        return BDHNeuro(BDHNeuroConfig(n=24, d=8, vocab_size=V))
    return GPT(GPTConfig(n_layer=2, n_embd=16, n_head=2, block_size=16, vocab_size=V))


PLASTIC = {
    "bdh": {"encoder", "encoder_v", "decoder", "lm_head"},  # the embedding stays as initialized
    "neuro": {"Dx", "Dy"},
    "gpt": {"blocks.0.c_fc.weight", "blocks.1.c_fc.weight"},
}


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def batch():
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, V, (3, 9), generator=g)
    return idx[:, :-1].contiguous(), idx[:, 1:].contiguous()


def test_factory_and_validation():
    assert make_learning_rule("backprop") is None
    assert make_learning_rule("backprop", prune_every=5).uses_backprop
    assert make_learning_rule("hybrid").uses_backprop
    assert not make_learning_rule("hebbian").uses_backprop
    for bad in (dict(mode="local"), dict(mode="hebbian", hebbian_lr=0.0), dict(prune_every=-1)):
        with pytest.raises(ConfigError):
            LearningRule(**bad)


@pytest.mark.parametrize("kind", ["bdh", "neuro", "gpt"])
def test_hebbian_mode_builds_no_graph_and_changes_exactly_the_plastic_weights(kind):
    model = tiny(kind).train()
    rule = make_learning_rule("hebbian", hebbian_lr=0.05)
    rule.attach(model)
    before = snapshot(model)
    x, y = batch()
    for step in (1, 2):
        with torch.no_grad():  # what the trainer does when not rule.uses_backprop
            _, loss = model(x, y)
        assert loss.grad_fn is None
        metrics = rule.after_step(model, step)
    assert metrics["hebbian_update"] > 0
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert changed == PLASTIC[kind]
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kind", ["bdh", "neuro", "gpt"])
def test_backprop_mode_makes_no_local_update(kind):
    model = tiny(kind).train()
    rule = make_learning_rule("backprop", prune_every=100, prune_threshold=0.5)
    rule.attach(model)
    before = snapshot(model)
    x, y = batch()
    model(x, y)[1].backward()
    metrics = rule.after_step(model, 1)  # not a pruning step
    assert all(torch.equal(v, before[k]) for k, v in model.named_parameters())
    assert "hebbian_update" not in metrics and "weight_sparsity" in metrics


def test_oja_update_matches_formula_on_gpt():
    model = tiny("gpt").train()
    rule = make_learning_rule("hybrid", hebbian_lr=0.1)
    rule.attach(model)
    captured = {}
    block = model.blocks[0]
    h1 = block.probe_mlp_in.register_forward_hook(lambda m, i, o: captured.update(pre=o.detach()))
    h2 = block.probe_mlp_hidden.register_forward_hook(
        lambda m, i, o: captured.update(post=o.detach())
    )
    x, y = batch()
    model(x, y)
    h1.remove(), h2.remove()
    W = block.c_fc.weight.detach().clone()
    pre = captured["pre"].reshape(-1, 16)
    post = captured["post"].reshape(-1, 64)
    M = pre.shape[0]
    expected = W + 0.1 * (post.t() @ pre - post.pow(2).sum(0).unsqueeze(1) * W) / M
    rule.after_step(model, 1)
    torch.testing.assert_close(block.c_fc.weight.detach(), expected, atol=1e-6, rtol=1e-5)


def test_oja_keeps_weights_bounded():
    model = tiny("neuro").train()
    rule = make_learning_rule("hebbian", hebbian_lr=0.5)
    rule.attach(model)
    x, y = batch()
    for step in range(1, 60):
        with torch.no_grad():
            model(x, y)
        rule.after_step(model, step)
    assert torch.isfinite(model.Dx).all() and torch.isfinite(model.Dy).all()
    assert model.Dx.norm(dim=1).max() < 3.0  # Oja's fixed point is unit norm per unit


def test_eval_forwards_record_nothing():
    model = tiny("bdh").eval()
    rule = make_learning_rule("hebbian")
    rule.attach(model)
    before = snapshot(model)
    with torch.no_grad():
        model(batch()[0])
    assert rule.after_step(model, 1)["hebbian_update"] == 0.0
    assert all(torch.equal(v, before[k]) for k, v in model.named_parameters())


@pytest.mark.parametrize("kind", ["bdh", "neuro", "gpt"])
def test_pruning_mask_persists_through_optimizer_steps_and_save_load(kind):
    model = tiny(kind).train()
    rule = make_learning_rule("backprop", prune_every=2, prune_threshold=0.02)
    rule.attach(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = batch()
    for step in (1, 2, 3):
        opt.zero_grad()
        model(x, y)[1].backward()
        opt.step()
        metrics = rule.after_step(model, step)
    masks = {k[len("mask.") :]: v for k, v in rule.state_dict().items() if k.startswith("mask.")}
    assert set(masks) == set(prunable_parameters(model))
    assert 0 < metrics["weight_sparsity"] < 1
    for name, param in prunable_parameters(model).items():
        assert (param[~masks[name]] == 0).all(), f"{name}: pruned weights came back"

    # A fresh rule restored from the state keeps pruned synapses at zero after an update.
    state = rule.state_dict()
    fresh = make_learning_rule("backprop", prune_every=1000, prune_threshold=0.02)
    fresh.attach(model)
    fresh.load_state_dict(state)
    with torch.no_grad():
        for p in prunable_parameters(model).values():
            p.add_(1.0)
    fresh.after_step(model, 1)
    for name, param in prunable_parameters(model).items():
        assert (param[~masks[name]] == 0).all()
        assert (param[masks[name]] != 0).any()


def test_load_state_rejects_a_mask_of_another_model():
    rule = make_learning_rule("backprop", prune_every=1)
    rule.attach(tiny("neuro"))
    with pytest.raises(ConfigError):
        rule.load_state_dict({"mask.Dx": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(ConfigError):
        rule.load_state_dict({"mask.nonexistent": torch.ones(1, dtype=torch.bool)})


def test_homeostasis_weakens_overactive_units():
    model = tiny("gpt").train()
    rule = make_learning_rule("backprop", homeostatic_scaling=True)
    rule.attach(model)
    fc = model.blocks[0].c_fc.weight
    with torch.no_grad():
        fc[0].mul_(20.0)  # unit 0 now far more active than the others
    x, y = batch()
    before = fc.detach().clone()
    model(x, y)
    metrics = rule.after_step(model, 1)
    ratio = fc.detach().norm(dim=1) / before.norm(dim=1)
    assert ratio[0] < 1.0 and metrics["homeostatic_spread"] > 1.0
    assert ratio[0] == ratio.min()
    assert "activity.blocks.0.c_fc.weight" in rule.state_dict()


class ToyFamily(torch.nn.Module):
    """One plastic linear map whose pre and post probes fire in a chosen order."""

    model_type = "toy"
    config_class = dict
    context_field = None
    bdh_analyses = False
    mlp_probe = None
    sparsity_probes = ("post",)
    cpu_bf16_pays = False
    carries_state = False
    probe_points = {"pre": Probe("probe_pre"), "post": Probe("probe_post")}
    plastic_sites = (
        PlasticSite("w.weight", "linear", pre=Probe("probe_pre"), post=Probe("probe_post")),
    )
    prunable = ("w.weight",)
    plasticity_metrics = NO_METRICS

    def __init__(self, order: str):
        super().__init__()
        torch.manual_seed(0)
        self.w = torch.nn.Linear(5, 3, bias=False)
        self.probe_pre, self.probe_post = torch.nn.Identity(), torch.nn.Identity()
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        post = torch.relu(self.w(x))
        fire = {"pre": lambda: self.probe_pre(x), "post": lambda: self.probe_post(post)}
        for role in self.order.split(","):
            fire[role]()
        return post

    def init_state(self, batch_size, device=None, dtype=None):
        raise NotImplementedError("the toy family has no recurrent form")

    prefill = step = init_state


def test_hebbian_pairs_do_not_depend_on_the_probes_order():
    x = torch.randn(4, 7, 5, generator=torch.Generator().manual_seed(2))
    W0 = ToyFamily("pre,post").w.weight.detach().clone()
    post = torch.relu(x @ W0.t()).reshape(-1, 3)
    pre = x.reshape(-1, 5)
    expected = W0 + 0.1 * (post.t() @ pre - post.pow(2).sum(0).unsqueeze(1) * W0) / pre.shape[0]
    for order in ("pre,post", "post,pre"):
        model = ToyFamily(order).train()
        rule = make_learning_rule("hebbian", hebbian_lr=0.1)
        rule.attach(model)
        # an unfinished use (only one half fired) never pairs with the next forward's
        model.order = "post" if order == "pre,post" else "pre"
        with torch.no_grad():
            model(x.flip(0) + 1.0)  # other activity: a stale half would change the update
            model.order = order
            model(x)
        assert rule.sites["w.weight"].samples == pre.shape[0], order
        rule.after_step(model, 1)
        torch.testing.assert_close(model.w.weight.detach(), expected, atol=1e-6, rtol=1e-5)
