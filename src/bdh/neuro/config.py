"""Configuration of the neuro BDH and its presets.

Every extension of the seed references (`BDHNeuroRefTorch`, `BDHGPURefStabilized`) is a
field, off by default; `BDHNeuroConfig.reference_neuro()` and `.reference_stabilized()`
give the settings that reproduce those references exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bdh.config import ConfigDict
from bdh.errors import ConfigError


@dataclass
class BDHNeuroConfig(ConfigDict):
    n: int = 256
    d: int = 32
    vocab_size: int = 256
    u_decay: float = 0.97
    ln_before_Dy: bool = True
    use_relu_lowrank: bool = True
    # multi-timescale rho decay: U = sum_k w_k u_k / sum_k w_k replaces u_decay
    U_kernels: list[float] | None = None
    U_weights: list[float] | None = None
    # rho columns of inactive neurons (x_j <= 0) shrink by (1 - eta)
    local_forget_eta: float = 0.0
    # y is scaled down so that sum(y) <= tau
    homeostasis_tau: float | None = None
    # keep the k largest y_core entries (lateral inhibition)
    k_wta: int | None = None
    # dendritic branch nonlinearity on Dy's output (softplus or relu), when branches > 0
    branches: int = 0
    branch_nl: str = "softplus"
    # surprisal gain on the rho write: min(g, g * H(softmax v*) / log d); 0 = gain 1
    mod_gamma_max: float = 0.0
    # Bernoulli(spike_rate) spikes added to y_core before inhibition
    spike_rate: float = 0.0
    # leaky x: x_t = x_decay * x_{t-1} + drive (None = plain accumulation)
    x_decay: float | None = None
    # x_t /= (|x_t|_1 + 1e-6)
    x_l1_norm: bool = False
    # keep the int(n * (x_kwta_base + x_kwta_gain * gain)) largest x entries, after v*
    x_kwta_adaptive: bool = False
    x_kwta_base: float = 0.05
    x_kwta_gain: float = 0.25
    # stabilized reference: zero x entries <= threshold_ratio * max(x)
    threshold_ratio: float | None = None
    # truncated BPTT: the state is detached every `bptt` tokens (0 = never)
    bptt: int = 64

    def __post_init__(self) -> None:
        self.require_positive_ints("n", "d", "vocab_size")
        if self.d < 2:
            raise ConfigError("d must be >= 2 (LayerNorm over d needs two values)")
        if self.U_kernels is not None:
            if not self.U_kernels:
                raise ConfigError("U_kernels must not be empty")
            weights = self.U_weights if self.U_weights is not None else [1.0] * len(self.U_kernels)
            if len(weights) != len(self.U_kernels) or sum(weights) <= 0:
                raise ConfigError(
                    "U_weights must match U_kernels in length and have a positive sum"
                )
        elif self.U_weights is not None:
            raise ConfigError("U_weights needs U_kernels")
        if self.branch_nl not in ("softplus", "relu"):
            raise ConfigError(f"branch_nl must be 'softplus' or 'relu', got {self.branch_nl!r}")
        if not 0.0 <= self.spike_rate <= 1.0:
            raise ConfigError(f"spike_rate must be in [0, 1], got {self.spike_rate!r}")
        if not 0.0 <= self.local_forget_eta <= 1.0:
            raise ConfigError(f"local_forget_eta must be in [0, 1], got {self.local_forget_eta!r}")
        if self.k_wta is not None and self.k_wta < 1:
            raise ConfigError(f"k_wta must be >= 1, got {self.k_wta!r}")
        if self.bptt < 0:
            raise ConfigError(f"bptt must be >= 0, got {self.bptt!r}")

    @property
    def rho_decay(self) -> float:
        """The scalar U applied to rho each token.

        The references mix their kernels as sum_k w_k * u_k * (rho + inc): every kernel acts
        on the same rho, so the mixture is one scalar decay.
        """
        if self.U_kernels is None:
            return self.u_decay
        weights = self.U_weights if self.U_weights is not None else [1.0] * len(self.U_kernels)
        return sum(w * u for w, u in zip(weights, self.U_kernels)) / sum(weights)

    @classmethod
    def reference_neuro(cls, **fields: Any) -> BDHNeuroConfig:
        """Settings under which the model computes `BDHNeuroRefTorch.step`.

        That reference always leaks and L1-normalises x, always applies the gain-modulated
        k-WTA on x, and defaults to mod_gamma_max = 1.
        """
        base = dict(x_decay=0.97, x_l1_norm=True, x_kwta_adaptive=True, mod_gamma_max=1.0)
        return cls(**{**base, **fields})

    @classmethod
    def reference_stabilized(cls, **fields: Any) -> BDHNeuroConfig:
        """Settings under which the model computes `BDHGPURefStabilized.step` (linear drive)."""
        base = dict(use_relu_lowrank=False, x_decay=0.97, x_l1_norm=True, threshold_ratio=0.02)
        return cls(**{**base, **fields})


BDHNeuroConfig.PRESETS = {  # type: ignore[attr-defined]  # looked up by bdh.registry.model_presets
    # Definition 4 with no extensions. "small" has BDH "tiny"'s parameter count
    # (229,632 vs 229,376 with the byte vocabulary).
    "tiny": dict(n=256, d=32),
    "small": dict(n=1024, d=64),
    # The seed's training setup (train_bdh_neuro.py): every extension on, n=128, d=32.
    "seed": dict(
        n=128,
        d=32,
        x_decay=0.97,
        x_l1_norm=True,
        x_kwta_adaptive=True,
        U_kernels=[0.99, 0.97, 0.94],
        U_weights=[0.5, 0.3, 0.2],
        local_forget_eta=0.02,
        homeostasis_tau=0.15 * 128,
        k_wta=16,
        branches=2,
        branch_nl="softplus",
        mod_gamma_max=0.8,
        spike_rate=0.01,
    ),  # fmt: skip
}
