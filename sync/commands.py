"""Commands beyond ``validate``; each registers itself on :data:`sync.cli.cli`."""

from __future__ import annotations
