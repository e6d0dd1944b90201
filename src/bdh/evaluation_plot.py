"""Loss-by-position curves of one or several models as one PNG (matplotlib, the `app` extra)."""

from __future__ import annotations

import itertools
import math
import textwrap
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from bdh.errors import BDHError
from bdh.evaluation import PositionalLoss


def require_pyplot() -> ModuleType:
    """matplotlib.pyplot on a file-only backend, or a one-line error naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise BDHError("plotting needs matplotlib: pip install 'bdh[app]'") from None
    return plt


def plot_loss_by_position(
    results: Mapping[str, PositionalLoss], out_path: str | Path, title: str | None = None
) -> Path:
    """One figure, one colour per named result: x = position (log scale), y = loss.

    A thin line is the fine curve (`PositionalLoss.curve`), a thick step
    the bucket means; a dotted line marks where a repeated text starts its second reading.
    """
    if not results:
        raise BDHError("nothing to plot: no results given")
    plt = require_pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for (name, result), color in zip(results.items(), colors):
        # A point sits at the geometric middle of its positions, as the x axis is logarithmic.
        middles = [math.sqrt(point.start * (point.end - 1)) for point in result.curve]
        ax.plot(
            middles, [point.loss for point in result.curve], color=color, linewidth=0.8, alpha=0.6
        )
        for i, bucket in enumerate(result.buckets):
            ax.hlines(
                bucket.loss, max(bucket.start, 1), bucket.end, color=color, linewidth=2.5,
                label=f"{name} ({result.sequences} x {result.length} tokens)" if i == 0 else None,
            )  # fmt: skip
        if result.repeat_from is not None:
            ax.axvline(result.repeat_from, color=color, linestyle=":", linewidth=1)
            ax.annotate(
                "text repeats", (result.repeat_from, 1), xycoords=("data", "axes fraction"),
                rotation=90, va="top", ha="right", fontsize=8, color=color,
            )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("position in the sequence (tokens before the predicted one)")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    lines = (title or "loss by position").splitlines()
    ax.set_title("\n".join(textwrap.fill(line, 100) for line in lines), fontsize=9)
    fig.tight_layout()
    out = Path(out_path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
