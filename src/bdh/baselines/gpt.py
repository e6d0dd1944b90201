"""GPT baseline: a pre-LN Transformer with causal softmax attention and a GELU MLP.

Same interface as `bdh.model.BDH`: `forward(idx, targets) -> (logits, loss)` for
training, and `init_state` / `prefill` / `step` for generation, where the state is a
preallocated key/value cache of `block_size` positions per layer. Positions are
learned, so a sequence can never be longer than `block_size` tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bdh.config import ConfigDict
from bdh.errors import BDHError, ConfigError
from bdh.generate import GenerateMixin
from bdh.ops.dropout import Dropout
from bdh.registry import NO_METRICS, PlasticSite, Probe, RecurrentState


@dataclass
class GPTConfig(ConfigDict):
    n_layer: int = 4
    n_embd: int = 64
    n_head: int = 4
    block_size: int = 256
    vocab_size: int = 256
    dropout: float = 0.0
    mlp_ratio: int = 4
    bias: bool = False
    tie_weights: bool = True

    def __post_init__(self) -> None:
        self.require_positive_ints("n_layer", "n_embd", "n_head", "block_size", "vocab_size", "mlp_ratio")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")


# Matched by parameter count (byte vocabulary, tied head, no biases) to BDH presets:
# tiny 229,952 vs BDH tiny 229,376; small 1,640,576 vs BDH small 1,638,400.
GPTConfig.PRESETS = {  # type: ignore[attr-defined]  # looked up by bdh.registry.model_presets
    "tiny": dict(n_layer=4, n_embd=64, n_head=4, block_size=256),
    "small": dict(n_layer=8, n_embd=128, n_head=4, block_size=256, dropout=0.1),
}


@dataclass
class GPTState(RecurrentState):
    """Key/value cache of a batch: k, v [n_layer, B, H, block_size, head_dim].

    Positions [0, position) hold the tokens consumed so far.
    """

    k: Tensor
    v: Tensor
    position: int = 0
    batch_axes: ClassVar[dict[str, int]] = {"k": 1, "v": 1}

    @property
    def capacity(self) -> int:
        """block_size: the cache is allocated whole."""
        return self.k.shape[3]


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        d, h = config.n_embd, config.n_head
        self.n_head = h
        self.dropout = config.dropout
        self.ln_1 = nn.LayerNorm(d, bias=config.bias)
        self.c_attn = nn.Linear(d, 3 * d, bias=config.bias)
        self.c_proj = nn.Linear(d, d, bias=config.bias)
        self.ln_2 = nn.LayerNorm(d, bias=config.bias)
        self.c_fc = nn.Linear(d, config.mlp_ratio * d, bias=config.bias)
        self.mlp_proj = nn.Linear(config.mlp_ratio * d, d, bias=config.bias)
        self.drop = Dropout(config.dropout)
        # Identity probes: forward hooks see the MLP's input [B, T, d] and hidden [B, T, 4d].
        self.probe_mlp_in = nn.Identity()
        self.probe_mlp_hidden = nn.Identity()

    def attention(self, x: Tensor, cache: tuple[Tensor, Tensor] | None, start: int) -> Tensor:
        """x [B, T, d]; with `cache` (k, v [B, H, block, hd]) positions start..start+T are written."""
        B, T, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (t.view(B, T, self.n_head, d // self.n_head).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        if cache is None or start == 0:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            # Continue a sequence: query i (position start+i) sees keys 0..start+i.
            keys, values = cache[0][:, :, : start + T], cache[1][:, :, : start + T]
            keys = torch.cat((keys[:, :, :start], k), dim=2)
            values = torch.cat((values[:, :, :start], v), dim=2)
            allowed = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed, dropout_p=p)
        if cache is not None:
            cache[0][:, :, start : start + T] = k
            cache[1][:, :, start : start + T] = v
        return out.transpose(1, 2).reshape(B, T, d)

    def forward(
        self, x: Tensor, cache: tuple[Tensor, Tensor] | None = None, start: int = 0
    ) -> Tensor:
        x = x + self.drop(self.c_proj(self.attention(self.ln_1(x), cache, start)))
        hidden = self.probe_mlp_hidden(F.gelu(self.c_fc(self.probe_mlp_in(self.ln_2(x)))))
        return x + self.drop(self.mlp_proj(hidden))


class GPT(GenerateMixin, nn.Module):
    model_type = "gpt"
    config_class = GPTConfig

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        d = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, d)
        self.wpe = nn.Embedding(config.block_size, d)
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(d, bias=config.bias)
        # A tied head reuses wte.weight in `logits` rather than sharing a Parameter, so
        # the state dict holds no aliased tensors (safetensors refuses them).
        self.lm_head = None if config.tie_weights else nn.Linear(d, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2 scaling of residual projections keeps the residual stream's variance flat.
        for name, param in self.named_parameters():
            if name.endswith(("c_proj.weight", "mlp_proj.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def logits(self, hidden: Tensor) -> Tensor:
        """hidden [..., d] -> logits [..., vocab]."""
        if self.lm_head is None:
            return F.linear(hidden, self.wte.weight)
        return self.lm_head(hidden)

    def num_parameters(self) -> int:
        """Distinct parameters (a tied head is counted once)."""
        return sum(p.numel() for p in self.parameters())

    def _run(self, idx: Tensor, state: GPTState | None = None) -> Tensor:
        """Final hidden states [B, T, d] of idx, continuing `state` when given."""
        B, T = idx.shape
        start = 0 if state is None else state.position
        if start + T > self.config.block_size:
            raise BDHError(
                f"sequence of {start + T} tokens exceeds the GPT block size {self.config.block_size}"
            )
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for i, block in enumerate(self.blocks):
            x = block(x, None if state is None else (state.k[i], state.v[i]), start)
        if state is not None:
            state.position += T
        return self.ln_f(x)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """idx, targets: [B, T] -> logits [B, T, vocab], loss or None."""
        logits = self.logits(self._run(idx))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    # ---- recurrent inference -------------------------------------------------------

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> GPTState:
        """An empty cache for `batch_size` sequences: k, v [n_layer, B, H, block_size, head_dim]."""
        c = self.config
        shape = (c.n_layer, batch_size, c.n_head, c.block_size, c.n_embd // c.n_head)
        ref = self.wte.weight
        k = torch.zeros(shape, device=device or ref.device, dtype=dtype or ref.dtype)
        return GPTState(k=k, v=torch.zeros_like(k))

    @torch.no_grad()
    def prefill(
        self, idx: Tensor, state: GPTState | None = None, all_logits: bool = True
    ) -> tuple[Tensor, GPTState]:
        """Consume idx [B, T] into the cache; logits [B, T, vocab] (or [B, vocab] of the last)."""
        if state is None:
            state = self.init_state(idx.shape[0])
        hidden = self._run(idx, state)
        logits = self.logits(hidden if all_logits else hidden[:, -1])
        return logits, state

    @torch.no_grad()
    def step(self, tokens: Tensor, state: GPTState) -> tuple[Tensor, GPTState]:
        """Consume one token per sequence, tokens [B] -> logits [B, vocab]."""
        hidden = self._run(tokens.view(-1, 1), state)
        return self.logits(hidden[:, 0]), state

    # ---- what the family exposes (bdh.registry.ModelFamily) ---------------------------

    cpu_bf16_pays = True  # whether precision 'auto' picks bf16 on a CPU with native bf16
    carries_state = False  # a KV cache bounded by block_size, not a state to train across windows
    context_field = "block_size"  # learned positions end there
    bdh_analyses = False
    sparsity_probes = ("hidden",)
    mlp_probe = "hidden"
    plasticity_metrics = NO_METRICS

    @property
    def probe_points(self) -> dict[str, Probe]:
        """The MLP's input [B, T, d] and hidden activity [B, T, 4d], once per block."""
        blocks = range(len(self.blocks))
        return {
            "mlp_in": Probe([f"blocks.{i}.probe_mlp_in" for i in blocks]),
            "hidden": Probe([f"blocks.{i}.probe_mlp_hidden" for i in blocks]),
        }

    @property
    def plastic_sites(self) -> list[PlasticSite]:
        """c_fc of every block: the MLP's input -> its GELU hidden activity."""
        return [
            PlasticSite(f"blocks.{i}.c_fc.weight", "linear",
                        Probe(f"blocks.{i}.probe_mlp_in"), Probe(f"blocks.{i}.probe_mlp_hidden"))
            for i in range(len(self.blocks))
        ]  # fmt: skip

    @property
    def prunable(self) -> list[str]:
        """The blocks' weight matrices."""
        return [n for n, p in self.named_parameters() if n.startswith("blocks.") and p.dim() == 2]
