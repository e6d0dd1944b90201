"""Can BDH's decoding state be stored in bf16 or fp16 (fp32 arithmetic)? Accuracy first.

    python benchmarks/state_precision.py --preset small --steps 2048

Decodes greedily in fp32 for `--steps` tokens after a 16-token prompt, then replays the
same tokens with the state rounded to bf16 / fp16 after every write (prefill included):
exactly the numerics of a state kept in the half type, read and updated in fp32. Prints
the largest logit error against fp32 (absolute, and relative to the largest fp32 logit)
and the share of steps whose greedy token agrees. Storage in a half type would halve the
state's memory traffic; it is only worth a kernel if the logits stay equal.
"""

from __future__ import annotations

import argparse
import json

import torch

from bdh.config import preset
from bdh.model import BDH


def decode(model: BDH, prompt: torch.Tensor, forced: torch.Tensor | None, steps: int, dtype):
    """Logits [steps, vocab] of greedy decoding (or of `forced` tokens), state rounded to dtype."""

    def rounded(state):
        if dtype is not None:
            state.kv.copy_(state.kv.to(dtype).float())
        return state

    logits, state = model.prefill(prompt, all_logits=False)
    state = rounded(state)
    out, tokens = [], []
    for i in range(steps):
        out.append(logits[0])
        token = logits.argmax(-1) if forced is None else forced[i : i + 1]
        tokens.append(int(token))
        logits, state = model.step(token, state)
        state = rounded(state)
    return torch.stack(out), torch.tensor(tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = BDH(preset(args.preset)).eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, 16))
    reference, tokens = decode(model, prompt, None, args.steps, None)
    report = {"preset": args.preset, "steps": args.steps, "seed": args.seed, "untrained": True}
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        logits, _ = decode(model, prompt, tokens, args.steps, dtype)
        error = (logits - reference).abs()
        report[name] = {
            "max_abs_logit_error": float(error.max()),
            "max_rel_logit_error": float(error.max() / reference.abs().max()),
            "greedy_agreement": float((logits.argmax(-1) == reference.argmax(-1)).float().mean()),
            "finite": bool(torch.isfinite(logits).all()),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
