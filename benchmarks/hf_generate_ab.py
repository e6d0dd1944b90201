"""Hugging Face `generate()` against bdh's own decoding, on the same weights.

    python benchmarks/hf_generate_ab.py --preset small --new-tokens 512

One BDH model, wrapped (not copied) by `bdh.hf.BDHForCausalLM`. Rounds alternate between
bdh's decoding (`generate_ids`, what `bdh generate` runs) and `model.generate()`, both
greedy, or both sampling with --sample, so both see the same machine load. Prints the
median tokens/s of each, their ratio, the machine and its load at the start, and checks
the two produced the same tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bdh.config import preset  # noqa: E402
from bdh.experiments.report import machine_info  # noqa: E402
from bdh.generate import SamplingConfig, generate_ids  # noqa: E402
from bdh.hf import BDHForCausalLM  # noqa: E402
from bdh.model import BDH  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--sample", action="store_true", help="Sample (temperature 1, no top-k) instead of greedy."
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_info()
    torch.manual_seed(0)
    model = BDH(preset(args.preset)).eval()
    hf = BDHForCausalLM.from_bdh(model).eval()
    prompt = torch.tensor([list(b"ROMEO:\n")])
    n = args.new_tokens
    sampling = SamplingConfig(greedy=not args.sample)

    def ours() -> torch.Tensor:
        torch.manual_seed(1)
        return generate_ids(model, prompt, n, sampling)[0]

    def theirs() -> torch.Tensor:
        torch.manual_seed(1)
        out = hf.generate(
            prompt,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=args.sample,
            top_k=0 if args.sample else None,
        )
        return out[0, prompt.shape[1] :]

    runs = {"bdh": ours, "hf": theirs}
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs = {name: run() for name, run in runs.items()}  # warm-up
    for _ in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    rate = {name: n / statistics.median(t) for name, t in times.items()}
    result = {
        "preset": args.preset,
        "new_tokens": n,
        "mode": "sample" if args.sample else "greedy",
        "rounds": args.rounds,
        "tokens_per_s": {k: round(v, 1) for k, v in rate.items()},
        "hf_over_bdh_time": round(rate["bdh"] / rate["hf"], 3),
        "same_tokens": bool(torch.equal(outputs["bdh"], outputs["hf"])),
        "machine": machine,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
