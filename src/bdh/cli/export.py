"""`bdh export`: a checkpoint in another library's format."""

from __future__ import annotations

from pathlib import Path

import click

from bdh.cli.group import app


@app.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["hf"]),
    required=True,
    help="hf: a Hugging Face transformers model directory (needs bdh[hf]).",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory to write.")
@click.option("--force", is_flag=True, help="Write into --out even if it is not empty.")
def export(checkpoint: Path, fmt: str, out: Path, force: bool) -> None:
    """Write CHECKPOINT (a run directory or checkpoint) for another library.

    --format hf: model.safetensors, config.json, tokenizer.json and tokenizer_config.json,
    loadable by AutoModelForCausalLM / AutoTokenizer / pipeline after `import bdh.hf`,
    and by bdh itself.
    """
    from bdh.errors import BDHError

    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise BDHError(f"{out} exists and is not an empty directory (use --force to write into it)")
    try:
        from bdh.hf import export_hf
    except ImportError as err:
        raise BDHError(
            f"--format hf needs transformers ({err.name} is missing): pip install 'bdh[hf]'"
        ) from None
    print(f"wrote {export_hf(checkpoint, out)}")
