"""Validation loss after a fixed training wall time on CPU: `bdh train` vs the official recipe.

    python benchmarks/quality_cpu.py --minutes 10

Runs, one after the other and each for the same training wall time (evaluation excluded):
  ours      `bdh.train.train` with the settings in OURS (docs/training.md says why);
  official  the official BDH-GPU module (../shared/reference/official_bdh.py) with its
            train.py recipe: AdamW lr 1e-3, weight decay 0.1, B=8, T=256, the `small`
            config (6 layers, n_embd 128, 4 heads, multiplier 32, dropout 0.1), fp32 on CPU.
Both are then scored by `bdh.evaluation.evaluate` on the whole validation split of tiny
Shakespeare (last 10%, byte tokens), in windows of their own training length. The load
average and the CPU time each run got are printed with the numbers, since the machine
may be shared. Results go to benchmarks/results/quality_cpu.json.
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a shared CPU, spinning threads of one
# process steal the cores the others wait for (docs/training.md). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from bdh.data import load_corpus  # noqa: E402
from bdh.evaluation import evaluate  # noqa: E402
from bdh.train import TrainConfig, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = REPO.parent / "shared" / "reference" / "official_bdh.py"

# Our recipe: the tiny preset at a short context, bf16 autocast on CPU, cosine over the budget.
OURS = dict(
    model="bdh", preset="tiny", block_size=64, batch_size=32, lr=6e-3, min_lr=6e-4,
    warmup_steps=20, schedule="cosine", precision="bf16", weight_decay=0.1, grad_clip=1.0,
)  # fmt: skip
OFFICIAL_SMALL = dict(n_layer=6, n_embd=128, n_head=4, mlp_internal_dim_multiplier=32, dropout=0.1, vocab_size=256)


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_ours(seconds: float, out_dir: Path) -> dict:
    cfg = TrainConfig(
        **OURS, steps=1_000_000, time_budget_s=seconds, out_dir=str(out_dir), device="cpu",
        eval_every=1_000_000, log_every=50, checkpoint_every=1_000_000, progress=False,
    )  # fmt: skip
    load_before, cpu0 = load_avg(), cpu_seconds()
    run = train(cfg, force=True)
    cpu = cpu_seconds() - cpu0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in lines if "loss" in r][-1]
    from bdh.checkpoint import load_checkpoint

    model, tokenizer = load_checkpoint(run)
    corpus, _ = load_corpus(None, tokenizer)
    result = evaluate(model, corpus.val, tokenizer, cfg.block_size, batch_size=32)
    return {
        "name": "ours (bdh train)", "config": {**OURS}, "steps": last["step"],
        "train_wall_s": last["elapsed_s"], "tokens": last["tokens"], "cpu_s_incl_eval": cpu,
        "val_loss": result.loss, "val_bpb": result.bits_per_byte, "val_tokens": result.tokens,
        "load_before": load_before, "load_after": load_avg(),
    }  # fmt: skip


def run_official(seconds: float, reference: Path, seed: int = 1337) -> dict:
    spec = importlib.util.spec_from_file_location("official_bdh", reference)
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)
    torch.manual_seed(seed)
    model = official.BDH(official.BDHConfig(**OFFICIAL_SMALL))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    corpus, tokenizer = load_corpus(None, "byte")
    generator = torch.Generator().manual_seed(seed)
    block, batch = 256, 8
    load_before, cpu0 = load_avg(), cpu_seconds()
    model.train()
    elapsed, steps = 0.0, 0
    while elapsed < seconds:
        t0 = time.perf_counter()
        x, y = corpus.batch("train", batch, block, generator)
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        elapsed += time.perf_counter() - t0
        steps += 1
    cpu = cpu_seconds() - cpu0
    result = evaluate(model, corpus.val, tokenizer, block, batch_size=8)
    return {
        "name": "official recipe", "config": {**OFFICIAL_SMALL, "lr": 1e-3, "weight_decay": 0.1,
                                             "batch_size": batch, "block_size": block},
        "steps": steps, "train_wall_s": elapsed, "tokens": steps * batch * block,
        "cpu_s_incl_eval": cpu, "val_loss": result.loss, "val_bpb": result.bits_per_byte,
        "val_tokens": result.tokens, "load_before": load_before, "load_after": load_avg(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall time per run")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "quality_cpu", help="run dir for ours")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--only", choices=["ours", "official"], default=None)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "quality_cpu.json")
    args = parser.parse_args()
    seconds = args.minutes * 60
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    print(
        f"machine: {machine}; torch threads {torch.get_num_threads()}; "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; load {load_avg()}",
        flush=True,
    )
    if args.only in (None, "official") and not args.reference.is_file():
        raise SystemExit(f"official reference not found at {args.reference} (see --reference)")
    results = []
    if args.only in (None, "ours"):
        results.append(run_ours(seconds, args.out))
        print(json.dumps(results[-1]), flush=True)
    if args.only in (None, "official"):
        results.append(run_official(seconds, args.reference))
        print(json.dumps(results[-1]), flush=True)
    for r in results:
        print(
            f"{r['name']:>18}: val loss {r['val_loss']:.4f} (bpb {r['val_bpb']:.4f}) after "
            f"{r['train_wall_s']:.0f} s training, {r['steps']} steps, {r['tokens']} tokens; "
            f"CPU {r['cpu_s_incl_eval']:.0f} s; load {r['load_before']} -> {r['load_after']}"
        )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"minutes": args.minutes, "machine": machine, "runs": results}, indent=2) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
