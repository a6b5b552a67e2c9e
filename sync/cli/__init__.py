"""The ``segsync`` command line."""

from sync.cli.app import cli, main

__all__ = ["cli", "main"]
