"""Model configuration and named presets.

`BDHConfig` keeps the official field names and defaults, so code written against the
official `bdh.py` constructs the same model here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from bdh.errors import ConfigError

# ALiBi-style damping (`damping="alibi"`): head h of H keeps U_h = 1 - 2^(-c (h+1) / H) of
# its state per token, c = this base unless "alibi:c" names another. With c = 16 the heads'
# half-lives run from about 11 tokens (h = 0 of 4) to about 45k (the last head).
ALIBI_DAMPING_BASE = 16.0


class ConfigDict:
    """JSON round trip for config dataclasses; unknown or ill-typed fields are ConfigErrors."""

    _unknown_label = "config field(s)"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def require_positive_ints(self, *names: str) -> None:
        """ConfigError unless every named field is an int >= 1 (bools refused)."""
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {cls._unknown_label}: {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as err:
            raise ConfigError(f"bad {cls.__name__}: {err}") from None


@dataclass
class BDHConfig(ConfigDict):
    n_layer: int = 6
    n_embd: int = 256
    dropout: float = 0.1
    n_head: int = 4
    mlp_internal_dim_multiplier: int = 128
    vocab_size: int = 256
    # Extensions beyond the official model, off by default (see docs/long_context.md).
    # damping: None (off), one factor U in (0, 1] for all heads, one per head, or
    # "alibi" / "alibi:c" (resolved here to per-head factors, see ALIBI_DAMPING_BASE).
    damping: float | list[float] | str | None = None
    # no_bptt: the attention's keys, values and incoming state carry no gradient (§7.2).
    no_bptt: bool = False

    # Left out of `to_dict` at their defaults, so a default config is the official one.
    EXTENSION_FIELDS = ("damping", "no_bptt")

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        for f in dataclasses.fields(self):
            if f.name in self.EXTENSION_FIELDS and data[f.name] == f.default:
                del data[f.name]
        return data

    def __post_init__(self) -> None:
        self.require_positive_ints("n_layer", "n_embd", "n_head", "mlp_internal_dim_multiplier", "vocab_size")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if (self.mlp_internal_dim_multiplier * self.n_embd) % self.n_head:
            raise ConfigError("mlp_internal_dim_multiplier * n_embd must be divisible by n_head")
        if self.neurons_per_head % 2:
            raise ConfigError("neurons per head must be even (RoPE rotates pairs)")
        if not isinstance(self.no_bptt, bool):
            raise ConfigError(f"no_bptt must be true or false, got {self.no_bptt!r}")
        self.damping = self._resolve_damping(self.damping)

    def _resolve_damping(self, value: Any) -> float | list[float] | None:
        if value is None:
            return None
        if isinstance(value, str):
            name, _, base = value.partition(":")
            try:
                c = float(base) if base else ALIBI_DAMPING_BASE
            except ValueError:
                c = -1.0
            if name != "alibi" or not c > 0:
                raise ConfigError(f"damping must be a number in (0, 1], a list of them or 'alibi[:c]' (c > 0), got {value!r}")
            return [1.0 - 2.0 ** (-c * (h + 1) / self.n_head) for h in range(self.n_head)]
        factors = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (list, tuple)) and len(value) not in (1, self.n_head):
            raise ConfigError(f"damping needs 1 or n_head={self.n_head} factors, got {len(value)}")
        for u in factors:
            if isinstance(u, bool) or not isinstance(u, (int, float)) or not 0.0 < u <= 1.0:
                raise ConfigError(f"damping factors must be in (0, 1], got {u!r}")
        return [float(u) for u in value] if isinstance(value, (list, tuple)) else float(value)

    def damping_factors(self) -> list[float] | None:
        """Per-head state decay U_h (length n_head), or None when damping is off."""
        if self.damping is None:
            return None
        if isinstance(self.damping, list):
            return self.damping * self.n_head if len(self.damping) == 1 else list(self.damping)
        return [self.damping] * self.n_head

    @property
    def neurons_per_head(self) -> int:
        """N: the width of one head's sparse neuron space."""
        return self.mlp_internal_dim_multiplier * self.n_embd // self.n_head

    @property
    def n_neurons(self) -> int:
        """n = heads * N: all neurons of one layer."""
        return self.neurons_per_head * self.n_head

    def num_parameters(self) -> int:
        d, n, v = self.n_embd, self.n_neurons, self.vocab_size
        return 3 * n * d + 2 * v * d


# Presets. Larger sizes are named by their parameter count (byte vocabulary).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_layer=4, n_embd=64, n_head=4, mlp_internal_dim_multiplier=16, dropout=0.0),
    "small": dict(n_layer=6, n_embd=128, n_head=4, mlp_internal_dim_multiplier=32),
    "official": dict(n_layer=6, n_embd=256, n_head=4, mlp_internal_dim_multiplier=128),
    "57m": dict(n_layer=6, n_embd=384, n_head=6, mlp_internal_dim_multiplier=128),
    "101m": dict(n_layer=8, n_embd=512, n_head=8, mlp_internal_dim_multiplier=128),
}
PRESETS["25m"] = PRESETS["official"]
BDHConfig.PRESETS = PRESETS  # type: ignore[attr-defined]  # looked up by bdh.registry.model_presets


def preset(name: str, **overrides: Any) -> BDHConfig:
    """Build a `BDHConfig` from a named preset, with optional field overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return BDHConfig.from_dict({**PRESETS[name], **overrides})
