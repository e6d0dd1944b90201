"""`bdh analyze` (interpretability report of a checkpoint) and `bdh app` (the visualizer)."""

from __future__ import annotations

from pathlib import Path

import click

from bdh.cli.group import app

DEFAULT_OUT_ROOT = Path("runs/analysis")
DEFAULT_TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n"


@app.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--text", "-t", default=DEFAULT_TEXT, show_default=True,
              help="Prompt whose activity and state are analysed.")  # fmt: skip
@click.option("--out", "-o", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Directory for analysis.json and the PNG figures (default: "
                   "runs/analysis/NAME, NAME the checkpoint's directory name); refused if it "
                   "holds files, unless --force.")  # fmt: skip
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("--baseline", type=click.Path(path_type=Path), default=None,
              help="Transformer checkpoint to compare activity and memory with.")  # fmt: skip
@click.option("--groups", "groups_file", type=click.Path(path_type=Path), default=None,
              help="JSON file {group: [words]} for the monosemanticity test "
                   "(default: built-in groups).")  # fmt: skip
@click.option("--layer", type=click.IntRange(min=0), default=0, show_default=True,
              help="Layer whose state snapshots are kept.")  # fmt: skip
@click.option("--head", type=click.IntRange(min=0), default=0, show_default=True,
              help="Head whose state snapshots are kept.")  # fmt: skip
@click.option("--lengths", default="64,256,1024,4096", show_default=True,
              help="Context lengths at which state memory is measured.")  # fmt: skip
@click.option("--synapses", is_flag=True,
              help="Also test the synapses of rho (last layer) for selectivity.")  # fmt: skip
@click.option("--device", default="cpu", show_default=True, help="Torch device.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Torch CPU threads. The analyses are many small ops, which more threads "
                   "slow down on a busy machine.")  # fmt: skip
def analyze(
    checkpoint: Path, text: str, out_dir: Path | None, force: bool, baseline: Path | None,
    groups_file: Path | None, layer: int, head: int, lengths: str, synapses: bool, device: str,
    threads: int,
) -> None:  # fmt: skip
    """Analyse a BDH CHECKPOINT: sparsity, state rho, neuron graph, monosemanticity, memory."""
    import json

    import torch

    from bdh.analysis.report import analyze_model, write_report
    from bdh.checkpoint import load_checkpoint
    from bdh.device import resolve_device
    from bdh.errors import BDHError
    from bdh.experiments.report import ReportDir

    torch.set_num_threads(threads)

    try:
        token_lengths = [int(v) for v in lengths.split(",") if v.strip()]
    except ValueError:
        raise BDHError(f"--lengths must be comma-separated integers, got {lengths!r}") from None
    groups = None
    if groups_file is not None:
        try:
            groups = json.loads(groups_file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise BDHError(f"cannot read concept groups from {groups_file}: {err}") from None
        if not isinstance(groups, dict) or not all(
            isinstance(w, list) and all(isinstance(x, str) for x in w) for w in groups.values()
        ):
            raise BDHError(f"{groups_file} must hold a JSON object {{group: [words]}}")
    device = str(resolve_device(device))
    model, tokenizer = load_checkpoint(checkpoint, device)
    base = load_checkpoint(baseline, device)[0] if baseline is not None else None
    if out_dir is None:
        out_dir = DEFAULT_OUT_ROOT / checkpoint.resolve().name
    ReportDir(out_dir, force)  # refuse an existing report before the analyses run
    result = analyze_model(
        model, tokenizer, text, base, groups, layer, head, token_lengths, synapses
    )
    for path in write_report(result, out_dir):
        print(f"wrote {path}")
    x = result["sparsity"]["x"]
    g = result["graph"][0]
    mono = result["monosemantic_neurons"]
    print(
        f"active neurons (x) {100 * x['overall_active']:.2f}% | head-0 graph: {g['n_edges']} edges, "
        f"modularity {g['modularity']:.3f} vs random {g['random_modularity_mean']:.3f} | "
        f"selective neurons {mono['significant_total']} (shuffled labels: "
        f"{mono['significant_with_shuffled_labels']})"
    )


@app.command("app")
@click.option("--bdh", "bdh_ckpt", type=click.Path(path_type=Path), default=None,
              help="BDH checkpoint (default: the cached tiny Shakespeare pair, trained on first use).")  # fmt: skip
@click.option("--baseline", type=click.Path(path_type=Path), default=None,
              help="Transformer checkpoint to compare with (needed with --bdh).")  # fmt: skip
@click.option("--port", type=click.IntRange(1, 65535), default=8501, show_default=True)
@click.option("--headless", is_flag=True, help="Do not open a browser.")
@click.option("--prepare", is_flag=True,
              help="Only train (or find) the default pair, print its paths and exit.")  # fmt: skip
@click.option("--screenshots", type=click.Path(path_type=Path), default=None,
              help="Serve headless, open every tab in Chromium (Live Training: a 90 s run), save one PNG per tab here, then exit.")  # fmt: skip
def app_command(
    bdh_ckpt: Path | None, baseline: Path | None, port: int, headless: bool, prepare: bool,
    screenshots: Path | None,
) -> None:  # fmt: skip
    """The Streamlit visualizer: BDH next to a Transformer, seven views, all numbers measured."""
    from bdh.app import app_cache_dir, ensure_default_pair, launch
    from bdh.errors import BDHError

    if (bdh_ckpt is None) != (baseline is None):
        raise BDHError("give both --bdh and --baseline, or neither (to use the default pair)")
    if bdh_ckpt is None:
        from tqdm import tqdm

        bars: dict[str, tqdm] = {}

        def progress(model: str, step: int, steps: int) -> None:
            # One bar per model, updated in place; the models train one after the other,
            # so the previous bar is finished before the next one starts.
            if model not in bars:
                for done in bars.values():
                    done.close()
                bars[model] = tqdm(total=steps, desc=f"training default {model}", unit="step")
            bars[model].update(step - bars[model].n)

        print(f"default pair in {app_cache_dir()}")
        bdh_ckpt, baseline = ensure_default_pair(on_progress=progress)
        for bar in bars.values():
            bar.close()
    if prepare:
        print(f"bdh: {bdh_ckpt}\nbaseline: {baseline}")
        return
    if screenshots is not None:
        import tempfile

        from bdh.app.browser import screenshot_tabs, serve

        log = Path(tempfile.gettempdir()) / f"bdh-app-{port}.log"
        with serve(bdh_ckpt, baseline, port, log) as url:
            for path in screenshot_tabs(url, screenshots, live_training_s=90):
                print(f"wrote {path}")
        return
    raise SystemExit(launch(bdh_ckpt, baseline, port, headless))
