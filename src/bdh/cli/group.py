"""The `bdh` command group; each command module registers itself on `app`."""

import click


@click.group(
    name="bdh",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="bdh")
def app() -> None:
    """BDH (Baby Dragon Hatchling): train, generate, evaluate, benchmark and inspect."""
