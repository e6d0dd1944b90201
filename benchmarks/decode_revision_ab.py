"""The C++ decoding kernel of this checkout against the one at a git revision, interleaved.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/decode_revision_ab.py --revision HEAD~1 \
        --preset small --batch-size 1

Builds `src/bdh/ops/decode/decode_cpu.cpp` as it was at `--revision` (through the same
extension cache as the package's kernels), then alternates rounds of `--steps` decoding
steps between the two builds on two copies of one prefilled state, so both see the same
machine. Both must take the same arguments. Prints the median step times, their ratio, how
far the two states ended apart, OMP_WAIT_POLICY (it changes how idle threads wait: the
CLI sets PASSIVE) and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from bdh.config import preset
from bdh.model import BDH, BDHState
from bdh.ops.cpp import load_kernel
from bdh.ops.decode import cpu

REPOSITORY = Path(__file__).resolve().parents[1]


def kernel_at(revision: str, directory: Path):
    relative = cpu.SOURCE.relative_to(REPOSITORY).as_posix()
    source = subprocess.run(["git", "-C", str(REPOSITORY), "show", f"{revision}:{relative}"],
                            check=True, capture_output=True).stdout  # fmt: skip
    path = directory / "decode_cpu.cpp"
    path.write_bytes(source)
    module = load_kernel(f"{cpu.NAME}_revision", path)
    if module is None:
        raise SystemExit(f"error: the kernel at {revision} could not be built")
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revision", required=True, help="git revision of the other kernel")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    current = cpu._kernel()
    if current is None:
        raise SystemExit("error: the C++ decoding kernel could not be built here")
    with tempfile.TemporaryDirectory() as directory:
        kernels = {"current": current, args.revision: kernel_at(args.revision, Path(directory))}
    load_start = os.getloadavg()[0]
    torch.manual_seed(0)
    model = BDH(preset(args.preset)).eval()
    B = args.batch_size
    _, prefilled = model.prefill(torch.randint(0, 256, (B, 16)), all_logits=False)
    states = {name: BDHState(prefilled.kv.clone(), prefilled.position) for name in kernels}
    tokens = torch.randint(0, 256, (4096, B))
    encoder_v_t = cpu.transposed_encoder_v(model.encoder_v)
    done = dict.fromkeys(kernels, 0)
    times: dict[str, list[float]] = {name: [] for name in kernels}

    @torch.inference_mode()
    def run(name: str, steps: int) -> None:
        state = states[name]
        for _ in range(steps):
            rope = torch.view_as_real(model.attn.phasors(state.position, 1)[0].contiguous())
            kernels[name].decode_token(tokens[done[name] % len(tokens)], state.kv, model.embed.weight,
                                       model.encoder, encoder_v_t, model.decoder, model.lm_head,
                                       rope.to(state.kv.dtype), None)  # fmt: skip
            state.position += 1
            done[name] += 1

    for _ in range(args.rounds):
        for name in kernels:
            run(name, 5)
            start = time.perf_counter()
            run(name, args.steps)
            times[name].append((time.perf_counter() - start) / args.steps)
    ours, other = statistics.median(times["current"]), statistics.median(times[args.revision])
    a, b = states["current"].kv, states[args.revision].kv
    print(json.dumps({
        "preset": args.preset, "batch_size": B, "threads": args.threads, "revision": args.revision,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "current_us": round(ours * 1e6), "revision_us": round(other * 1e6),
        "revision_over_current": round(other / ours, 2),
        "states_apart_relative": float((a - b).abs().max() / b.abs().max()),
        "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
