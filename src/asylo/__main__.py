"""`python -m asylo ...` is the `asylo` command (local provisioning starts proxies this way)."""

from asylo.cli.main import main

main()
