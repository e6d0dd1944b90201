"""`bdh` command line. Errors caused by input end in one line on stderr and a non-zero exit."""

from __future__ import annotations

import importlib
import os
import sys

import click

from bdh.cli.group import app
from bdh.errors import BDHError

# Command modules, each registering its commands on `app`.
COMMAND_MODULES = [
    "bdh.cli.bench",
    "bdh.cli.analyze",
    "bdh.cli.compare",
    "bdh.cli.data",
    "bdh.cli.experiment",
    "bdh.cli.export",
    "bdh.cli.inference",
    "bdh.cli.merge",
    "bdh.cli.train",
]


def register_commands() -> click.Group:
    """Import the command modules (once) and return the group holding their commands."""
    for name in COMMAND_MODULES:
        importlib.import_module(name)
    return app


# Environment defaults set before torch loads (its OpenMP runtime reads them then); a value
# the user set, even empty, is kept. PASSIVE: idle OpenMP threads sleep instead of spinning.
# On shared cores spinning made `bdh train` 8x slower and more; on idle cores it gains
# about a quarter (docs/performance.md, benchmarks/omp_wait_cli.py).
RUNTIME_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def set_runtime_defaults() -> None:
    for name, value in RUNTIME_DEFAULTS.items():
        os.environ.setdefault(name, value)


def fail(message: str, code: int = 1) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    # Ctrl-C lands anywhere from the first import on: the commands are imported here, and
    # `import bdh` loads nothing heavy, so an early interrupt is caught like a late one.
    set_runtime_defaults()
    try:
        register_commands().main(args=argv, prog_name="bdh", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as err:
        fail(err.format_message(), err.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        fail("interrupted", 130)
    except BDHError as err:
        fail(str(err))
    except FileNotFoundError as err:
        fail(f"no such file: {err.filename}")
    except OSError as err:  # disk full, permission denied, ...: the system's one line
        fail(f"{err.strerror or err}" + (f": {err.filename}" if err.filename else ""))
    except MemoryError:
        fail("out of memory")
