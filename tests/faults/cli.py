"""Running the CLI in-process for the fault tests: its exit code and what it printed to stderr."""

from __future__ import annotations

from bdh.cli import main


def cli(args: list[str], capsys) -> tuple[int, str]:
    try:
        main(args)
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    return code, capsys.readouterr().err
