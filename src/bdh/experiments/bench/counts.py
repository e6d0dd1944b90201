"""Floating-point operations and bytes of each benchmarked path, counted from the shapes.

Each count is the work of the matrix products a path runs (where nearly all of BDH's
arithmetic is), and the traffic those products need at the least: every operand read
once and every result written once, at the element size the product runs in. Elementwise
passes (ReLU, LayerNorm, RoPE, masks) are not counted, so the byte counts are lower
bounds of what a path moves, and a path's achieved GB/s (bytes over seconds) understates
its real traffic. Conventions, the same for the official code and ours:

- A product [m, k] x [k, n] is 2 m k n FLOPs; a rank-1 state write S += k^T v over an
  [N, D] state is 2 N D (a multiply and an add per element), reading and writing S.
- Training counts the model's FLOPs: the backward of a product is twice its forward (one
  product per input gradient), so a step is 3 x the forward products, whichever way a side
  computes the gradients (ours needs fewer in the attention backward: its rate is then
  for the same work as the official one). Bytes likewise 3 x the forward products' bytes,
  plus AdamW's pass over the parameters: read weight, gradient and both moments, write
  weight and both moments (7 fp32 tensors the size of the weights).
- Decoding counts dense work: our kernel skips the state rows of inactive neurons, so its
  achieved "dense-equivalent" rate may exceed what the hardware does per second. The
  state is counted as read once and written once per step (the fused kernel's traffic);
  the shared weights are counted once per layer, since a step reads them layer by layer.
- The official `generate()` runs a full forward over the whole context for every new
  token (logits of every position included); each of those forwards is counted.

tests/bench/test_counts.py checks the FLOP counts against torch's FlopCounterMode on
small shapes, and the byte counts against sums written out by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from bdh.config import BDHConfig
from bdh.ops.attention import QUADRATIC_MAX_LEN
from bdh.ops.attention.chunked import DEFAULT_CHUNK_SIZE

FP32 = 4


@dataclass(frozen=True)
class Work:
    """FLOPs and bytes moved."""

    flops: float = 0.0
    bytes: float = 0.0

    def __add__(self, other: Work) -> Work:
        return Work(self.flops + other.flops, self.bytes + other.bytes)

    def __mul__(self, factor: float) -> Work:
        return Work(self.flops * factor, self.bytes * factor)

    __rmul__ = __mul__


def product(batch: int, m: int, k: int, n: int, itemsize: int, shared_right: bool = False) -> Work:
    """batch products [m, k] x [k, n]; `shared_right`: one right operand for all of them."""
    right = k * n if shared_right else batch * k * n
    return Work(2.0 * batch * m * k * n, float(itemsize * (batch * m * k + right + batch * m * n)))


def _sizes(config: BDHConfig) -> tuple[int, int, int, int, int]:
    return config.n_layer, config.n_embd, config.n_head, config.neurons_per_head, config.vocab_size


def _attention_quadratic(B: int, H: int, T: int, N: int, D: int, itemsize: int, state: bool) -> Work:
    """Scores qk qk^T [T, T] per head, then scores x v (v [T, D] shared by the heads); with
    a carried state also the read qk S_0 and the final state qk^T v + S_0."""
    work = product(B * H, T, N, T, itemsize)  # both operands counted, as the official reads QR and KR
    work += Work(2.0 * B * H * T * T * D, itemsize * (B * H * T * T + B * T * D + B * H * T * D))
    if state:
        work += product(B * H, T, N, D, itemsize)  # read: qk [T, N] x S_0 [N, D]
        work += product(B * H, N, T, D, itemsize) + Work(0, itemsize * B * H * N * D)  # write: + S_0
    return work


def _attention_chunked(B: int, H: int, T: int, N: int, D: int, itemsize: int, chunk: int) -> Work:
    """The chunked form: quadratic inside chunks of `chunk` tokens, the state between."""
    work = Work()
    for start in range(0, T, chunk):
        work += _attention_quadratic(B, H, min(chunk, T - start), N, D, itemsize, state=True)
    return work


def layer_work(config: BDHConfig, B: int, T: int, itemsize: int = FP32, *, state: bool = False,
               chunk: int | None = None) -> Work:  # fmt: skip
    """One BDH layer's products over T tokens: encoder, attention (quadratic, or chunked
    in chunks of `chunk`), encoder_v, decoder."""
    _, D, H, N, _ = _sizes(config)
    # x [B, 1, T, D] (one per sequence) x encoder [H, D, N]
    encoder = Work(2.0 * B * H * T * D * N, itemsize * (B * T * D + H * D * N + B * H * T * N))
    if chunk is None:
        attention = _attention_quadratic(B, H, T, N, D, itemsize, state)
    else:
        attention = _attention_chunked(B, H, T, N, D, itemsize, chunk)
    # attention output [B, H, T, D] x encoder_v [H, D, N]
    encoder_v = Work(2.0 * B * H * T * D * N, itemsize * (B * H * T * D + H * D * N + B * H * T * N))
    decoder = product(B, T, H * N, D, itemsize, shared_right=True)
    return encoder + attention + encoder_v + decoder


def lm_head_work(config: BDHConfig, rows: int, itemsize: int = FP32) -> Work:
    _, D, _, _, V = _sizes(config)
    return product(1, rows, D, V, itemsize)


def forward_work(config: BDHConfig, B: int, T: int, itemsize: int = FP32) -> Work:
    """The parallel forward (the official one, and ours in training): quadratic
    attention over T tokens, logits of every position."""
    return config.n_layer * layer_work(config, B, T, itemsize) + lm_head_work(config, B * T, itemsize)


def parameter_count(config: BDHConfig) -> int:
    _, D, H, N, V = _sizes(config)
    return 3 * H * N * D + 2 * V * D  # decoder, encoder, encoder_v; embedding, lm_head


def train_step_work(config: BDHConfig, B: int, T: int, precision: str = "fp32") -> Work:
    """Forward, backward (2 x the forward products) and AdamW over the parameters."""
    itemsize = 2 if precision in ("bf16", "fp16") else FP32
    optimizer = Work(0.0, 7.0 * FP32 * parameter_count(config))
    return 3 * forward_work(config, B, T, itemsize) + optimizer


def decode_step_work(config: BDHConfig, B: int) -> Work:
    """Our decoding step for B sequences: per layer the encoder, the state's read and
    rank-1 write (state read once and written once), encoder_v and the per-head
    decoder products; then the logits."""
    L, D, H, N, _ = _sizes(config)
    encoder = Work(2.0 * H * B * D * N, FP32 * (B * D + H * D * N + H * B * N))  # x [B, D] per head
    # read o = q S and write S += q^T x: the state once each way, q read, o written
    state = Work(4.0 * B * H * N * D, FP32 * (2 * B * H * N * D + B * H * N + B * H * D + B * D))
    encoder_v = product(H, B, D, N, FP32)  # LN(o) [H, B, D] x encoder_v [H, D, N]
    decoder = product(H, B, N, D, FP32)
    return L * (encoder + state + encoder_v + decoder) + lm_head_work(config, B)


def prefill_work(config: BDHConfig, B: int, T: int, chunk_tokens: int, all_logits: bool = False) -> Work:
    """Our prefill: pieces of `chunk_tokens` on a carried state; each piece runs the
    quadratic form up to QUADRATIC_MAX_LEN tokens, the chunked form beyond."""
    work = Work()
    for start in range(0, T, chunk_tokens):
        t = min(chunk_tokens, T - start)
        chunk = None if t <= QUADRATIC_MAX_LEN else DEFAULT_CHUNK_SIZE
        work += config.n_layer * layer_work(config, B, t, state=True, chunk=chunk)
    return work + lm_head_work(config, B * T if all_logits else B)


def ours_generate_work(config: BDHConfig, B: int, prompt_len: int, new_tokens: int, chunk_tokens: int) -> Work:
    """Prefill of the prompt (last logits only), then one step per new token but the last."""
    return prefill_work(config, B, prompt_len, chunk_tokens) + (new_tokens - 1) * decode_step_work(config, B)


def official_generate_work(config: BDHConfig, B: int, prompt_len: int, new_tokens: int) -> Work:
    """A full forward over the context for each of the new tokens."""
    work = Work()
    for i in range(new_tokens):
        work += forward_work(config, B, prompt_len + i)
    return work
