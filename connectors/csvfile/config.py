"""The ``crm: {type: csv, ...}`` block of a tenant."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from connectors.registry import VendorConfig


class CsvCrm(VendorConfig):
    """A CRM export as CSV files: contacts (and optionally events). Pushes go to ``output``."""

    type: Literal["csv"]
    contacts: Path
    events: Path | None = None
    delimiter: str = Field(",", min_length=1, max_length=1)
    id_column: str | None = "id"
    email_column: str | None = "email"
    created_column: str | None = None
    event_columns: dict[str, str] = Field(default_factory=dict)
    output: Path | None = None
    base_url: str | None = None  # accepted for symmetry; files have no URL
