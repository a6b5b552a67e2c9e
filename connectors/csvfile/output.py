"""The output CSV (``id`` plus one column per property), merged with a batch of changes as a stream.

The file is never held in memory: one pass reads which of the batch's ids it already has, a second
copies it row by row into a temporary file, changing those rows and inserting the new ids in key
order, and the temporary file replaces the output (rename: a crash never leaves half a file).
Memory is the batch, not the book: a million-row output is rewritten with a few MB.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from connectors.csvfile.rows import read_rows
from core.errors import InputError

Changes = Sequence[tuple[str, Mapping[str, object]]]


def _existing(path: Path) -> Iterator[tuple[list[str], Iterator[list[str]]]]:
    """The output's header and its rows, each checked (a hand-edited file is an InputError naming the line)."""
    with read_rows(path, ",") as (header, rows):
        if not header or header[0] != "id":
            raise InputError(f"{path}:1: not a segsync output file (first column must be 'id'); move it away")

        def checked() -> Iterator[list[str]]:
            for line, fields in rows:
                if len(fields) != len(header):
                    raise InputError(f"{path}:{line}: expected {len(header)} fields, found {len(fields)}; "
                                     "the output file was edited by hand - fix or remove it")
                yield fields

        yield header, checked()


def merge_output(path: Path, changes: Changes) -> None:
    """Write ``changes`` (id, {property: value}) into the output at ``path``; later changes of an id win."""
    batch: dict[str, dict[str, str]] = {}
    for key, props in changes:
        batch.setdefault(key, {}).update({k: "" if v is None else str(v) for k, v in props.items()})
    present: set[str] = set()
    header = ["id"]
    if path.exists():
        for old_header, rows in _existing(path):
            header = list(old_header)
            present = {fields[0] for fields in rows if fields[0] in batch}
    for changed in batch.values():
        header += [name for name in changed if name not in header]
    new = iter(sorted(k for k in batch if k not in present))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)

            def put(key: str, row: dict[str, str]) -> None:
                writer.writerow([key, *(row.get(col, "") for col in header[1:])])

            pending = next(new, None)
            if path.exists():
                for old_header, rows in _existing(path):
                    for fields in rows:
                        key = fields[0]
                        while pending is not None and pending < key:
                            put(pending, batch[pending])
                            pending = next(new, None)
                        row = dict(zip(old_header[1:], fields[1:], strict=True))
                        row.update(batch.get(key, {}))
                        put(key, row)
            while pending is not None:
                put(pending, batch[pending])
                pending = next(new, None)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
