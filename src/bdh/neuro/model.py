"""The neuro BDH: the Definition-4 recurrence, batched over sequences and trainable.

Per token, for every sequence of the batch (n neurons, d latent dims, v = embedding):

    x_t   = x_decay * x_{t-1} + relu(Dx v_t)        # neuron state accumulates the drive
    a*_t  = rho_{t-1} x_t                            # rho is read before it is written
    y_t   = relu(Dy LN(a*_t)) * x_t                  # gated by x
    v*_t  = LN(E y_t)                                # readout: logits = head(v*_t)
    rho_t = U * (rho_{t-1} + gain * v_t x_t^T)       # Hebbian rank-1 write

Every extension of the seed references (`BDHNeuroRefTorch`, `BDHGPURefStabilized`) is a
field of `BDHNeuroConfig` (config.py), off by default. LN is the references' row normalisation (unbiased std, eps added to the std).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bdh.errors import BDHError
from bdh.generate import GenerateMixin
from bdh.neuro.config import BDHNeuroConfig
from bdh.ops.kwta import kernel_available, kwta_mask
from bdh.ops.rho import rho_read, rho_write
from bdh.registry import PlasticSite, Probe, RecurrentState

LN_EPS = 1e-6
L1_EPS = 1e-6


def layernorm_row(z: Tensor) -> Tensor:
    """The references' LN over the last dim: (z - mean) / (unbiased std + 1e-6)."""
    centered = z - z.mean(dim=-1, keepdim=True)
    # Tensor.std is several times slower on CPU for short rows, forward and backward. The
    # clamp keeps the gradient of a constant row (rho = 0 on the first token) at zero, as
    # Tensor.std does, instead of 0 * inf from the square root.
    var = (centered * centered).sum(dim=-1, keepdim=True) / (z.shape[-1] - 1)
    return centered / (var.clamp_min(torch.finfo(var.dtype).tiny).sqrt() + LN_EPS)


def energy_effective_rank(mats: Tensor, eps: float = 1e-12) -> Tensor:
    """exp(entropy of the normalised squared singular values) of mats [..., d, n] -> [...].

    The seed references' `rho_eff_rank`. It weighs the spectrum by energy (s^2), where
    `bdh.analysis.effective_rank` (Roy & Vetterli) weighs it by s: both give r for r equal
    singular values, this one less for a spread spectrum.
    """
    s2 = torch.linalg.svdvals(mats.float()).pow(2)
    p = s2 / (s2.sum(dim=-1, keepdim=True) + eps)
    return torch.exp(-(p * (p + eps).log()).sum(dim=-1))


@dataclass
class NeuroState(RecurrentState):
    """Recurrent state of a batch: x [B, n] and rho [B, d, n]; position = tokens consumed."""

    x: Tensor
    rho: Tensor
    position: int = 0
    batch_axes: ClassVar[dict[str, int]] = {"x": 0, "rho": 0}


@dataclass
class NeuroTrace:
    """Per-token activity of a run: x, y [B, T, n]; v [B, T, d]; gain [B, T];
    rho [B, T, d, n] when recorded."""

    x: Tensor
    y: Tensor
    v: Tensor
    gain: Tensor
    rho: Tensor | None = None


class BDHNeuro(GenerateMixin, nn.Module):
    model_type = "neuro"
    config_class = BDHNeuroConfig

    def __init__(self, config: BDHNeuroConfig):
        super().__init__()
        self.config = config
        n, d, V = config.n, config.d, config.vocab_size
        # Same shapes and scales as the references: E [d, n], Dx/Dy [n, d], token_emb [V, d].
        self.E = nn.Parameter(torch.randn(d, n) / math.sqrt(n))
        self.Dx = nn.Parameter(torch.randn(n, d) / math.sqrt(d))
        self.Dy = nn.Parameter(torch.randn(n, d) / math.sqrt(d))
        self.token_emb = nn.Parameter(torch.randn(V, d) / math.sqrt(d))
        self.head = nn.Linear(d, V)  # v* -> next-token logits, as in the seed's wrapper
        # Identity probes, called once per forward on the stacked per-token activity:
        self.probe_v_in = nn.Identity()  # token embedding v_t [B, T, d] (Dx's input)
        self.probe_drive = nn.Identity()  # drive relu(Dx v_t) [B, T, n] (Dx's output)
        self.probe_a = nn.Identity()  # LN(a*_t) [B, T, d] (Dy's input)
        self.probe_x = nn.Identity()  # x_t [B, T, n] (after x inhibition)
        self.probe_y = nn.Identity()  # y_t [B, T, n]
        self._metrics_run: tuple[NeuroTrace, NeuroState] | None = None
        self._metrics: dict[str, float] | None = None
        # the gain never exceeds mod_gamma_max (1 when off), which bounds the adaptive x
        # k-WTA; +1 covers the float32 gain rounding up across an integer
        top_gain = config.mod_gamma_max if config.mod_gamma_max > 0 else 1.0
        top_k = int(config.n * (config.x_kwta_base + config.x_kwta_gain * top_gain)) + 1
        self._x_k_max = max(1, min(config.n, top_k))

    # ---- the recurrence ------------------------------------------------------------

    def _gain(self, v_star: Tensor) -> Tensor:
        """Surprisal gain [B] from v* [B, d]; a constant 1 when mod_gamma_max <= 0.

        Like the references' Python float, it carries no gradient.
        """
        c = self.config
        if c.mod_gamma_max <= 0.0:
            return torch.ones(v_star.shape[0], device=v_star.device, dtype=v_star.dtype)
        p = torch.softmax(v_star.detach(), dim=-1)
        H = -(p * (p + 1e-12).log()).sum(dim=-1)
        return (H / math.log(c.d + 1e-6) * c.mod_gamma_max).clamp(max=c.mod_gamma_max)

    def _token(
        self, v_in: Tensor, drive: Tensor, x: Tensor, rho: Tensor, spike_draw: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One token for every row: v_in [B, d], its drive [B, n], x [B, n], rho [B, d, n].

        Returns x_t, y_t, v*_t, rho_t, gain and Dy's input (for its probe).
        """
        c = self.config
        x = (x if c.x_decay is None else c.x_decay * x) + drive
        if c.x_l1_norm:
            x = x / (x.abs().sum(dim=-1, keepdim=True) + L1_EPS)
        if c.threshold_ratio is not None:
            threshold = c.threshold_ratio * x.max(dim=-1, keepdim=True).values
            x = torch.where(x > threshold, x, torch.zeros_like(x))
        a_star, rho = rho_read(rho, x)  # this rho goes on to the token's write
        dy_in = layernorm_row(a_star) if c.ln_before_Dy else a_star
        y_core = dy_in @ self.Dy.t()
        if c.branches > 0:
            # The references split Dy's rows into branches and apply the nonlinearity to
            # each part; it is elementwise, so applying it to the whole is the same.
            y_core = F.softplus(y_core) if c.branch_nl == "softplus" else F.relu(y_core)
        if not c.ln_before_Dy:
            y_core = layernorm_row(y_core)
        if spike_draw is not None:
            y_core = y_core + (spike_draw < c.spike_rate).to(y_core.dtype)
        if c.k_wta is not None and c.k_wta < c.n:
            y_core = y_core * kwta_mask(y_core, c.k_wta).to(y_core.dtype)
        y = F.relu(y_core) * x.clamp(min=0.0)
        if c.homeostasis_tau is not None:
            s = y.sum(dim=-1, keepdim=True)
            scale = (c.homeostasis_tau / (s + 1e-8)).clamp(max=1.0)
            y = y * torch.where(s > 1e-8, scale, torch.ones_like(scale))
        v_star = layernorm_row(y @ self.E.t())
        gain = self._gain(v_star)
        if c.x_kwta_adaptive:
            k = (c.n * (c.x_kwta_base + c.x_kwta_gain * gain.double())).floor().long().clamp(1, c.n)
            x = x * kwta_mask(x, k, self._x_k_max).to(x.dtype)
        # rho_t = U * (forget * rho_{t-1} + gain * v x^T)
        keep: Tensor | float = c.rho_decay
        if c.local_forget_eta > 0.0:
            inactive = (x.detach() <= 0).to(rho.dtype).unsqueeze(1)
            keep = c.rho_decay * (1.0 - c.local_forget_eta * inactive)
        v_scaled = (c.rho_decay * gain).unsqueeze(-1) * v_in
        rho = rho_write(rho, v_scaled, x, keep)
        return x, y, v_star, rho, gain, dy_in

    def run(
        self,
        idx: Tensor,
        state: NeuroState | None = None,
        generator: torch.Generator | None = None,
        record_rho: bool = False,
    ) -> tuple[NeuroTrace, NeuroState]:
        """Run idx [B, T] through the recurrence from `state` (zeros when None).

        The state is detached every `config.bptt` tokens (truncated BPTT). The returned
        state is new; the one passed in is not modified.
        """
        B, T = idx.shape
        if T == 0:
            raise BDHError("the neuro model needs at least one token")
        c = self.config
        if state is None:
            state = self.init_state(B)
        x, rho = state.x, state.rho
        v_in_all = self.token_emb[idx]  # B, T, d
        # The drive does not depend on the state: one product for all tokens.
        drive_all = v_in_all @ self.Dx.t()  # B, T, n
        if c.use_relu_lowrank:
            drive_all = F.relu(drive_all)
        # unbind: its backward stacks the T gradients once, where indexing [:, t] would
        # add T full-size zero-padded gradients.
        v_ins, drives = v_in_all.unbind(1), drive_all.unbind(1)
        # All spike draws up front: the same numbers as one [B, n] draw per token (the CPU
        # generator fills tensors in order), and no generator inside the compiled cell.
        spike_draws: list[Tensor | None] = [None] * T
        if c.spike_rate > 0.0:
            shape = (T, B, c.n)
            spike_draws = list(
                torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype).unbind(0)
            )
        xs, ys, vs, gains, a_ins, rhos = [], [], [], [], [], []
        for t in range(T):
            if c.bptt and t and t % c.bptt == 0:
                x, rho = x.detach(), rho.detach()
            x, y, v, rho, gain, a_in = self._token(v_ins[t], drives[t], x, rho, spike_draws[t])
            xs.append(x)
            ys.append(y)
            vs.append(v)
            gains.append(gain)
            a_ins.append(a_in)
            if record_rho:
                rhos.append(rho)
        trace = NeuroTrace(
            x=self.probe_x(torch.stack(xs, 1)),
            y=self.probe_y(torch.stack(ys, 1)),
            v=torch.stack(vs, 1),
            gain=torch.stack(gains, 1),
            rho=torch.stack(rhos, 1) if record_rho else None,
        )
        self.probe_v_in(v_in_all)
        self.probe_drive(drive_all)
        self.probe_a(torch.stack(a_ins, 1))
        return trace, NeuroState(x=x, rho=rho, position=state.position + T)

    @staticmethod
    @torch.no_grad()
    def token_metrics(trace: NeuroTrace) -> dict[str, Tensor]:
        """Per-token metrics [B, T] of a trace recorded with `record_rho=True`: the
        references' sparsity_x, sparsity_y, rho_F, rho_eff_rank and gain."""
        if trace.rho is None:
            raise ValueError("token_metrics needs a trace run with record_rho=True")
        return {
            "sparsity_x": (trace.x == 0).float().mean(dim=-1),
            "sparsity_y": (trace.y == 0).float().mean(dim=-1),
            "rho_F": torch.linalg.matrix_norm(trace.rho.float()),
            "rho_eff_rank": energy_effective_rank(trace.rho),
            "gain": trace.gain.float(),
        }

    @property
    def last_metrics(self) -> dict[str, float]:
        """`step_metrics` of the last training-mode forward ({} before one).

        Computed when first read: the effective rank takes one SVD per sequence, which
        costs a tenth of a training step on CPU and is only wanted when metrics are logged.
        """
        if self._metrics is None:
            self._metrics = (
                {} if self._metrics_run is None else self.step_metrics(*self._metrics_run)
            )
            self._metrics_run = None
        return self._metrics

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """torch.compile the per-token cell in place (arguments as for torch.compile).

        The token loop stays in Python, so one small graph serves every position and
        sequence length; compiling the whole unrolled loop would take minutes.
        """
        kernel_available()  # build the k-WTA kernel now, not while tracing
        self._token = torch.compile(self._token, *args, **kwargs)  # type: ignore[method-assign]

    @torch.no_grad()
    def step_metrics(self, trace: NeuroTrace, state: NeuroState) -> dict[str, float]:
        """Batch means: sparsity of x and y (fraction of zeros) and gain over all tokens;
        Frobenius norm and effective rank of the final rho."""
        return {
            "sparsity_x": float((trace.x == 0).float().mean()),
            "sparsity_y": float((trace.y == 0).float().mean()),
            "rho_F": float(torch.linalg.matrix_norm(state.rho.float()).mean()),
            "rho_eff_rank": float(energy_effective_rank(state.rho).mean()),
            "gain": float(trace.gain.float().mean()),
        }

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        state: NeuroState | None = None,
    ) -> tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None, NeuroState]:
        """idx, targets: [B, T] -> logits [B, T, vocab], loss or None.

        Each sequence starts from the zero state, or continues `state` under autograd: the
        advanced state then comes back third (carried-state training). In training mode
        `last_metrics` holds this call's activity metrics (see `step_metrics`).
        """
        carried = state is not None
        trace, state = self.run(idx, state, generator=generator)
        if self.training:  # kept for `last_metrics`, which the learning rules read
            detached = NeuroTrace(x=trace.x.detach(), y=trace.y.detach(), v=trace.v.detach(),
                                  gain=trace.gain.detach())  # fmt: skip
            self._metrics_run = (detached, NeuroState(x=state.x.detach(), rho=state.rho.detach()))
            self._metrics = None
        logits = self.head(trace.v)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return (logits, loss, state) if carried else (logits, loss)

    # ---- recurrent inference -------------------------------------------------------

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> NeuroState:
        """Zero state: x [B, n], rho [B, d, n]."""
        c = self.config
        ref = self.E
        kw = dict(device=device or ref.device, dtype=dtype or ref.dtype)
        return NeuroState(
            x=torch.zeros(batch_size, c.n, **kw), rho=torch.zeros(batch_size, c.d, c.n, **kw)
        )

    @torch.no_grad()
    def prefill(
        self, idx: Tensor, state: NeuroState | None = None, all_logits: bool = True
    ) -> tuple[Tensor, NeuroState]:
        """Consume idx [B, T]; logits [B, T, vocab] (or [B, vocab] of the last token)."""
        trace, state = self.run(idx, state)
        return self.head(trace.v if all_logits else trace.v[:, -1]), state

    @torch.no_grad()
    def step(self, tokens: Tensor, state: NeuroState) -> tuple[Tensor, NeuroState]:
        """Consume one token per sequence, tokens [B] -> logits [B, vocab]."""
        trace, state = self.run(tokens.view(-1, 1), state)
        return self.head(trace.v[:, 0]), state

    # ---- what the family exposes (bdh.registry.ModelFamily) ---------------------------

    cpu_bf16_pays = False  # whether precision 'auto' picks bf16 on a CPU with native bf16
    carries_state = True  # forward(idx, targets, state=...) continues a state
    context_field = None
    bdh_analyses = False
    probe_points = {name: Probe(f"probe_{name}") for name in ("v_in", "drive", "a", "x", "y")}
    sparsity_probes = ("x", "y")
    mlp_probe = None
    plastic_sites = (
        PlasticSite("Dx", "linear", pre=probe_points["v_in"], post=probe_points["drive"]),
        PlasticSite("Dy", "linear", pre=probe_points["a"], post=probe_points["y"]),
    )
    prunable = ("E", "Dx", "Dy")

    @property
    def plasticity_metrics(self) -> dict[str, float]:
        """rho_F, rho_eff_rank and gain of `last_metrics`: what the learning rule reports."""
        return {
            k: v for k, v in self.last_metrics.items() if k in ("rho_F", "rho_eff_rank", "gain")
        }
