"""BDH-GPU, computing exactly what the official `bdh.py` computes.

One set of weights is shared by all layers. Each layer:

    x_sparse = relu(x @ encoder)                      # [B, H, T, N], sparse positive neurons
    a        = LN(attn(rope(x_sparse), rope(x_sparse), x))   # linear attention, no softmax, diagonal excluded
    y_sparse = relu(a @ encoder_v)                    # [B, H, T, N]
    x        = LN(x + LN(dropout(x_sparse * y_sparse) @ decoder))

The attention has a recurrent form: per head, a state S = sum_s rope(x_s)^T x_s of
shape [N, D] (the synaptic state rho) is read before the current token is written.
Training uses the parallel form; `prefill`/`step` carry the state for generation, and
`forward(idx, targets, state=...)` carries it through a training window under autograd.
Two options beyond the official model, off by default (docs/long_context.md): damping
(rho_t = U rho_{t-1} + k_t^T v_t) and no-BPTT (keys, values and state without gradient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bdh.config import BDHConfig
from bdh.errors import BDHError
from bdh.generate import GenerateMixin
from bdh.ops.attention import causal_linear_attention, shared_qk_attention
from bdh.ops.decode import decode_token
from bdh.ops.dropout import Dropout
from bdh.ops.gating import gate
from bdh.ops.rope import HALF_DTYPES, apply_rope_phasors, rope_frequencies, rope_phasors
from bdh.registry import NO_METRICS, PlasticSite, Probe, RecurrentState

# Prompts are prefilled this many tokens at a time, so memory does not grow with T.
PREFILL_CHUNK = 1024
# RoPE phasors are cached for the first positions, up to both limits (elements: T * N / 2);
# later positions (long prompts, long generations) are computed per chunk or token.
ROPE_CACHE_MAX_POSITIONS = 4096
ROPE_CACHE_MAX_ELEMENTS = 1 << 21


@dataclass
class BDHState(RecurrentState):
    """Recurrent state of a batch: per layer and head, rho = sum_s rope(x_s)^T v_s.

    kv: [n_layer, B, H, N, D]; position: tokens consumed so far (the next RoPE position).
    Its size does not depend on how many tokens were consumed.
    """

    kv: Tensor
    position: int = 0
    batch_axes: ClassVar[dict[str, int]] = {"kv": 1}  # where each tensor keeps its sequences


class RotaryLinearAttention(nn.Module):
    """Shared-key RoPE linear attention of one layer; holds the official `freqs` buffer.

    `decay` [H] (config.damping) and `no_bptt` are the optional extensions; `decay` is a
    fixed, non-persistent buffer, so state dicts keep the official keys.
    """

    def __init__(self, config: BDHConfig):
        super().__init__()
        n = config.neurons_per_head
        self.freqs = nn.Buffer(rope_frequencies(n).view(1, 1, 1, n))
        factors = config.damping_factors()
        self.decay: Tensor | None
        self.register_buffer("decay", None if factors is None else torch.tensor(factors), persistent=False)
        self.no_bptt = config.no_bptt
        self._phasor_cache: Tensor | None = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        # Loaded frequencies (a merged model's, bdh.merge) replace the ones the cache was built from.
        self._phasor_cache = None
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        # .to(), .double(), .cuda() move or convert the frequencies the cache was built from.
        self._phasor_cache = None
        return super()._apply(fn, recurse)

    def phasors(self, start: int, length: int) -> Tensor:
        """RoPE phasors of positions start..start+length-1, complex [length, N/2].

        Computed once per forward (all layers share them) and cached for the first
        positions, instead of recomputing cos/sin of every position in every layer. The
        cache doubles as positions need it, up to its limit; beyond, phasors are computed
        per call, so decoding far past it keeps memory flat.
        """
        cache = self._phasor_cache
        end = start + length
        if cache is not None and end <= cache.shape[0]:
            return cache[start:end]
        freqs = self.freqs.view(-1)
        # A model cast to bf16/fp16 has freqs without the digits the phases need.
        if freqs.dtype in HALF_DTYPES:
            freqs = rope_frequencies(freqs.numel()).to(freqs.device)
        limit = min(ROPE_CACHE_MAX_POSITIONS, ROPE_CACHE_MAX_ELEMENTS // (freqs.numel() // 2))
        if end > limit:
            return rope_phasors(start, length, freqs)
        size = 0 if cache is None else cache.shape[0]
        self._phasor_cache = rope_phasors(0, min(limit, max(end, 2 * size, 256)), freqs)
        return self._phasor_cache[start:end]

    def forward(
        self, x_sparse: Tensor, v: Tensor, phasors: Tensor, state: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """x_sparse: [B, H, T, N] (queries = keys); v: [B, 1, T, D]; phasors: [T, N/2].

        With `state` [B, H, N, D] the tokens continue a sequence; returns the output
        [B, H, T, D] and then the final state (None without `state`). Nothing is modified.
        """
        qr = apply_rope_phasors(x_sparse, phasors)
        final = state is not None
        if self.no_bptt:
            # §7.2: gradients reach the weights through the queries only; keys, values and
            # the state they built are constants.
            k, v = qr.detach(), v.detach()
            state = None if state is None else state.detach()
            return causal_linear_attention(qr, k, v, state, final, decay=self.decay)
        return shared_qk_attention(qr, v, state, final, decay=self.decay)


class BDH(GenerateMixin, nn.Module):
    model_type = "bdh"
    config_class = BDHConfig

    def __init__(self, config: BDHConfig):
        super().__init__()
        self.config = config
        H, D, N = config.n_head, config.n_embd, config.neurons_per_head
        # Creation order matches the official module, so a seed gives the same weights.
        self.decoder = nn.Parameter(torch.zeros((H * N, D)).normal_(std=0.02))
        self.encoder = nn.Parameter(torch.zeros((H, D, N)).normal_(std=0.02))
        self.attn = RotaryLinearAttention(config)
        self.embed = nn.Embedding(config.vocab_size, D)
        self.drop = Dropout(config.dropout)
        self.encoder_v = nn.Parameter(torch.zeros((H, D, N)).normal_(std=0.02))
        self.lm_head = nn.Parameter(torch.zeros((D, config.vocab_size)).normal_(std=0.02))
        nn.init.normal_(self.embed.weight, mean=0.0, std=0.02)
        # Identity probes: forward hooks on them see each layer's activity (analysis, metrics).
        self.probe_x = nn.Identity()  # x_sparse [B, H, T, N]
        self.probe_attn = nn.Identity()  # LN(attention output) [B, H, T, D]
        self.probe_y = nn.Identity()  # y_sparse [B, H, T, N]
        self.probe_xy = nn.Identity()  # x_sparse * y_sparse [B, H, T, N], before dropout
        # The inputs and outputs of the decoder and readout (the local delta rules' sites).
        self.probe_decoder_in = nn.Identity()  # dropout(x_sparse * y_sparse) [B, 1, T, H * N]
        self.probe_decoder_out = nn.Identity()  # y_mlp [B, 1, T, D]
        self.probe_readout_in = nn.Identity()  # final hidden state [B, T, D]
        self.probe_logits = nn.Identity()  # logits [B, T, vocab]

    def ln(self, x: Tensor) -> Tensor:
        """Parameter-free LayerNorm over the last dimension."""
        return F.layer_norm(x, (x.shape[-1],))

    def layer(
        self, x: Tensor, state: Tensor | None = None, start: int = 0, phasors: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """One BDH layer on x [B, 1, T, D] (weights shared by all layers).

        The tokens sit at positions start..start+T-1; `phasors` (from `attn.phasors`) may be
        passed in so that all layers of a forward share one RoPE table. With `state`
        [B, H, N, D] the attention continues it; returns the new x and the layer's final
        state (None without `state`). `step` is this function written for one token.
        """
        B, _, T, D = x.shape
        if phasors is None:
            phasors = self.attn.phasors(start, T)
        x_sparse = self.probe_x(F.relu(x @ self.encoder))  # B, H, T, N
        attn, final = self.attn(x_sparse, x, phasors, state)
        y_kv = self.probe_attn(self.ln(attn))  # B, H, T, D
        # y_sparse = relu(y_kv @ encoder_v); xy = x_sparse * y_sparse; dropped = dropout(xy)
        y_sparse, xy, dropped = gate(x_sparse, y_kv @ self.encoder_v, self.drop.p, self.training)
        # A forward hook on a probe may replace what it sees (an ablation): go on from that
        # (dropout then draws its mask again).
        seen_y = self.probe_y(y_sparse)  # B, H, T, N
        seen_xy = self.probe_xy(xy if seen_y is y_sparse else x_sparse * seen_y)
        if seen_y is not y_sparse or seen_xy is not xy:
            dropped = self.drop(seen_xy)
        xy_flat = self.probe_decoder_in(dropped.transpose(1, 2).reshape(B, 1, T, -1))
        y_mlp = self.probe_decoder_out(xy_flat @ self.decoder)  # B, 1, T, D
        return self.ln(x + self.ln(y_mlp)), final

    def _run(self, idx: Tensor, state: BDHState | None = None, in_place: bool = False) -> Tensor:
        """Final hidden states [B, T, D] of idx, continuing `state` when given.

        The state advances: written into state.kv when `in_place` (inference), else
        state.kv becomes a new tensor holding the final state, in the autograd graph.
        """
        B, T = idx.shape
        x = self.ln(self.embed(idx).unsqueeze(1))  # B, 1, T, D
        start = 0 if state is None else state.position
        phasors = self.attn.phasors(start, T)
        finals = []
        for level in range(self.config.n_layer):
            x, final = self.layer(x, None if state is None else state.kv[level], start, phasors)
            if state is not None and in_place:
                state.kv[level].copy_(final)  # and let `final` go: memory stays one state
            else:
                finals.append(final)
        if state is not None:
            if not in_place:
                state.kv = torch.stack(finals)
            state.position += T
        return x.view(B, T, -1)

    @overload
    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]: ...

    @overload
    def forward(
        self, idx: Tensor, targets: Tensor | None, state: BDHState
    ) -> tuple[Tensor, Tensor | None, BDHState]: ...

    @overload
    def forward(
        self, idx: Tensor, targets: Tensor | None = None, *, state: BDHState
    ) -> tuple[Tensor, Tensor | None, BDHState]: ...

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, state: BDHState | None = None
    ) -> tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None, BDHState]:
        """Parallel form. idx, targets: [B, T] -> logits [B, T, vocab], loss or None.

        With `state` the window continues it (RoPE positions from state.position, each
        layer's attention from state.kv) under autograd, and the state comes back third:
        its kv is then a new tensor, the final state, whose graph reaches the old one and
        the weights (the old tensor is not modified), and its position has advanced by T.
        Use the returned state (wrappers such as DDP may hand `forward` a copy): pass it on
        as is to backpropagate through both windows, or `state.detach()` for truncated BPTT.
        """
        logits = self.probe_logits(self.probe_readout_in(self._run(idx, state)) @ self.lm_head)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        if state is not None:
            return logits, loss, state
        return logits, loss

    # ---- recurrent inference -------------------------------------------------------

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> BDHState:
        """An empty state for `batch_size` sequences: [n_layer, B, H, N, D] zeros."""
        c = self.config
        kv = torch.zeros(
            c.n_layer, batch_size, c.n_head, c.neurons_per_head, c.n_embd,
            device=device or self.lm_head.device, dtype=dtype or self.lm_head.dtype,
        )  # fmt: skip
        return BDHState(kv=kv)

    def prefill(
        self,
        idx: Tensor,
        state: BDHState | None = None,
        all_logits: bool = True,
        differentiable: bool = False,
    ) -> tuple[Tensor, BDHState]:
        """Consume idx [B, T] into the state, PREFILL_CHUNK tokens at a time.

        Returns logits [B, T, vocab] (or [B, vocab] of the last token when
        `all_logits` is False) and the updated state. `differentiable` runs `forward`
        with the state instead (autograd, no in-place update; dropout as the module's
        mode says), so gradients reach the given state and the weights.
        """
        B, T = idx.shape
        if T == 0:
            raise BDHError("prefill needs at least one token")
        if state is None:
            state = self.init_state(B)
        if differentiable:
            with torch.enable_grad():
                logits, _, state = self.forward(idx, None, state)
            return (logits if all_logits else logits[:, -1]), state
        return self._prefill(idx, state, all_logits)

    @torch.inference_mode()
    def _prefill(self, idx: Tensor, state: BDHState, all_logits: bool) -> tuple[Tensor, BDHState]:
        B, T = idx.shape
        # One output allocation up front: small per-chunk results kept across iterations
        # would fragment the heap and let memory creep up over very long prompts.
        logits = self.lm_head.new_empty(B, T, self.config.vocab_size) if all_logits else None
        for start in range(0, T, PREFILL_CHUNK):
            hidden = self._run(idx[:, start : start + PREFILL_CHUNK], state, in_place=True)
            if all_logits:
                logits[:, start : start + hidden.shape[1]] = hidden @ self.lm_head
        return (logits if all_logits else hidden[:, -1] @ self.lm_head), state

    def step(
        self, tokens: Tensor, state: BDHState, differentiable: bool = False
    ) -> tuple[Tensor, BDHState]:
        """Consume one token per sequence, tokens [B] (or [B, 1]) -> logits [B, vocab].

        `differentiable` runs `forward` on the one-token window instead (autograd, no
        in-place update), like `prefill`.
        """
        if tokens.dim() == 2 and tokens.shape[1] == 1:
            tokens = tokens[:, 0]
        if tokens.dim() != 1:
            raise BDHError(
                f"step takes one token per sequence, shape [B] or [B, 1]; got {list(tokens.shape)}"
            )
        if differentiable:
            with torch.enable_grad():
                logits, _, state = self.forward(tokens[:, None], None, state)
            return logits[:, 0], state
        return self._step(tokens, state)

    @torch.inference_mode()
    def _step(self, tokens: Tensor, state: BDHState) -> tuple[Tensor, BDHState]:
        """`forward` written for a single token, in place on the state: `bdh.ops.decode`
        (a C++ kernel on CPU, its twin `decode_token_torch` elsewhere),
        without the [B, H, T, ...] reshaping of the parallel form, which costs more than
        the arithmetic at batch 1 (the probes fire in the parallel form only).
        tests/test_recurrent.py::test_recurrent_equals_parallel_fp64 and
        tests/test_stateful_model.py::test_damped_decoding_equals_parallel check that the
        two forms compute the same.
        """
        phasors = self.attn.phasors(state.position, 1)[0]  # N/2
        logits = decode_token(
            tokens, state.kv, self.embed.weight, self.encoder, self.encoder_v, self.decoder,
            self.lm_head, phasors, self.attn.decay,
        )  # fmt: skip
        state.position += 1
        return logits, state

    # ---- what the family exposes (bdh.registry.ModelFamily) ---------------------------

    context_field = None
    bdh_analyses = True
    cpu_bf16_pays = True  # whether precision 'auto' picks bf16 on a CPU with native bf16
    carries_state = True  # forward(idx, targets, state) continues a state (truncated BPTT)
    probe_points = {name: Probe(f"probe_{name}") for name in ("x", "attn", "y", "xy")}
    sparsity_probes = ("x", "y")
    mlp_probe = "xy"
    # encoder: the layer input x (attn's second argument) -> x_sparse; encoder_v: LN(attention) -> y_sparse
    # (Oja); decoder: predicts the next input's embedding; lm_head: the softmax delta rule.
    plastic_sites = (
        PlasticSite("encoder", "heads", pre=Probe("attn", input=1), post=Probe("probe_x")),
        PlasticSite("encoder_v", "heads", pre=Probe("probe_attn"), post=Probe("probe_y")),
        PlasticSite(
            "decoder", "matmul", pre=Probe("probe_decoder_in"), post=Probe("probe_decoder_out"),
            rule="predictive", teacher="embed.weight",
        ),
        PlasticSite("lm_head", "matmul", pre=Probe("probe_readout_in"), post=Probe("probe_logits"), rule="delta"),
    )  # fmt: skip
    prunable = ("encoder", "encoder_v", "decoder")
    plasticity_metrics = NO_METRICS
