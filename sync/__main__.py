"""``python -m sync`` = the ``segsync`` command."""

from sync.cli import main

main()
