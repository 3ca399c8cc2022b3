"""The `asylo` command line."""
