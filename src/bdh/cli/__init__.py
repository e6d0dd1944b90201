"""`bdh` command line. Errors caused by input end in one line on stderr and a non-zero exit."""

from __future__ import annotations

import importlib
import sys

import click

from bdh.cli.group import app
from bdh.errors import BDHError

# Command modules, each registering its commands on `app`.
COMMAND_MODULES = [
    "bdh.cli.bench",
    "bdh.cli.analyze",
    "bdh.cli.compare",
    "bdh.cli.experiment",
    "bdh.cli.inference",
    "bdh.cli.merge",
    "bdh.cli.train",
]
for _name in COMMAND_MODULES:
    importlib.import_module(_name)


def fail(message: str, code: int = 1) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    try:
        app.main(args=argv, prog_name="bdh", standalone_mode=False)
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
    except MemoryError:
        fail("out of memory")
