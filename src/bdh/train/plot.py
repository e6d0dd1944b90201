"""`bdh plot RUN_DIR`: metric curves of a run as one PNG (matplotlib, from the `app` extra)."""

from __future__ import annotations

from pathlib import Path

from bdh.errors import BDHError, DataError
from bdh.train.metrics import read_metrics
from bdh.train.state import METRICS_FILE

# (title, [(metric key, label)]) per panel; panels with no data are left out.
PANELS = [
    ("loss (nats/token)", [("loss", "train"), ("val_loss", "val")]),
    ("sparsity (fraction of zeros)", [("sparsity_x", "x"), ("sparsity_y", "y")]),
    ("state norm ||rho||_F", [("state_norm", "rho")]),
    ("gain", [("gain", "gain")]),
    ("learning rate", [("lr", "lr")]),
    ("throughput (tokens/s)", [("tokens_per_s", "tokens/s")]),
]


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_run(run_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Read RUN_DIR/metrics.jsonl and write the curves (default RUN_DIR/metrics.png)."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS_FILE
    if not metrics_path.is_file():
        raise DataError(f"no {METRICS_FILE} in '{run_dir}' (is it a training run directory?)")
    records = read_metrics(metrics_path)
    panels = []
    for title, series in PANELS:
        lines = []
        for key, label in series:
            points = [(r["step"], r[key]) for r in records if _number(r.get("step")) and _number(r.get(key))]
            if points:
                lines.append((label, points))
        if lines:
            panels.append((title, lines))
    if not panels:
        raise DataError(f"{metrics_path} holds no metrics yet")
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise BDHError("bdh plot needs matplotlib: pip install 'bdh[app]'") from None
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels):
        for label, points in lines:
            steps, values = zip(*points)
            ax.plot(steps, values, label=label, marker="o" if len(points) < 30 else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend()
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    out = Path(out_path) if out_path is not None else run_dir / "metrics.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
