"""`asylo`: build, sign and inspect enclave images, and run the quickstart.

Each command lives in its own module; this one only assembles the group.
"""

from __future__ import annotations

import logging
import sys

import click

from asylo import __version__
from asylo.cli.bench_command import bench
from asylo.cli.devca_command import dev_ca
from asylo.cli.evidence_command import evidence
from asylo.cli.image_commands import build, inspect, keygen
from asylo.cli.platform_command import platform
from asylo.cli.provision_command import provision
from asylo.cli.provision_server_command import provision_server
from asylo.cli.proxy_command import proxy
from asylo.cli.quickstart import quickstart


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="asylo")
@click.option("-v", "--verbose", count=True, help="Log more (-v: info, -vv: debug).")
def cli(verbose: int) -> None:
    """pyasylo: enclave applications in Python, with enclaves that run in-process (sim) or on another machine.

    Start with `asylo quickstart --message "Asylo Rocks"`.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


cli.add_command(keygen)
cli.add_command(build)
cli.add_command(inspect)
cli.add_command(quickstart)
cli.add_command(proxy)
cli.add_command(dev_ca)
cli.add_command(bench)
cli.add_command(provision_server)
cli.add_command(provision)
cli.add_command(platform)
cli.add_command(evidence)


def main() -> None:
    cli()
