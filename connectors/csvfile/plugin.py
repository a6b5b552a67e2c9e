"""CSV exports as a CRM, seen from outside this folder: config, factory, limits, checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectors.csvfile.config import CsvCrm
from connectors.csvfile.connector import CsvConnector
from connectors.kit.http import RetrySettings
from connectors.registry import FAIL, OK, BuildContext, Check, VendorPlugin


def build(cfg: CsvCrm, context: BuildContext) -> CsvConnector:
    """The connector over the block's files (paths relative to the config file's folder)."""
    return CsvConnector(
        context.path(cfg.contacts) or cfg.contacts,
        context.path(cfg.events),
        delimiter=cfg.delimiter,
        id_column=cfg.id_column,
        email_column=cfg.email_column,
        created_column=cfg.created_column,
        event_columns=dict(cfg.event_columns),
        output=context.path(cfg.output),
    )


def check(cfg: CsvCrm, connect: Callable[[], Any], context: BuildContext, retry: RetrySettings) -> list[Check]:
    """The export files exist and can be read (nothing is built: a file check needs no connector)."""
    found = []
    for name, path in (("contacts", cfg.contacts), ("events", cfg.events)):
        if path is None:
            continue
        full = context.path(path) or path
        try:
            with full.open("rb") as fh:
                fh.read(1)
        except OSError as exc:
            found.append(Check(f"crm csv {name}", FAIL, f"crm.{name}: {full}: {exc.strerror}"))
        else:
            found.append(Check(f"crm csv {name}", OK, f"{full} is readable"))
    return found


PLUGIN = VendorPlugin(
    name="csv",
    role="crm",
    title="CSV files",
    config_model=CsvCrm,
    factory=build,
    limits={"default": CsvConnector.limits},
    check=check,
)
