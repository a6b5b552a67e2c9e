"""The ledger's secret key, kept in a file outside the database.

One key per tenant, 32 random bytes, generated the first time the tenant needs it: the
*pseudonym* key, which turns an email into the tenant's pseudonym (``subject_key``, the proof that
survives erasure) and from which the hash-chain key is derived (:func:`consent.chain.chain_key`).
It is *not* the webhook secret, which sits in an ESP's webhook URL. Someone who can write to
the database but cannot read this file can neither forge a ledger row nor recompute the chain
after an edit, nor sign a checkpoint, nor test guessed emails against pseudonyms.

The file is JSON, created with mode 0600 in a 0700 directory; a file readable by group or others
is refused (the keys must be as private as the config's secrets). Writes go through a temporary
file and ``os.replace`` under an exclusive ``flock``, so two processes starting at once agree on one
key. Back the file up with the database: without it old pseudonyms cannot be looked up and the
keyed chain cannot be checked (segsync then refuses to run rather than treat everyone as unknown).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.errors import InputError

KINDS = ("pseudonym",)
#: Where the key file lives unless the config (``keys_file``) or ``SEGSYNC_KEYS_FILE`` says otherwise.
DEFAULT_KEYS_FILE = "~/.config/segsync/keys.json"
ENV_VAR = "SEGSYNC_KEYS_FILE"


def default_path() -> Path:
    """The key file's path when the config names none: ``$SEGSYNC_KEYS_FILE`` or ~/.config/segsync/keys.json."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_KEYS_FILE).expanduser()


class KeyFile:
    """Per-tenant keys in one JSON file (see the module docstring). Keys are cached once read."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_path()
        self._cache: dict[tuple[str, str], bytes] = {}

    def __repr__(self) -> str:  # never print keys
        return f"KeyFile({str(self.path)!r})"

    def pseudonym_key(self, tenant: str) -> bytes:
        """The tenant's pseudonym key (generated and saved on first use)."""
        return self.get(tenant, "pseudonym")

    def get(self, tenant: str, kind: str, *, create: bool = True) -> bytes:
        """One key; raises :class:`InputError` when it is missing and ``create`` is False."""
        if kind not in KINDS:
            raise ValueError(f"unknown key kind {kind!r}")
        cached = self._cache.get((tenant, kind))
        if cached is not None:
            return cached
        value = self._read().get(tenant, {}).get(kind)
        if value is None:
            if not create:
                raise InputError(f"{self.path}: no {kind} key for tenant {tenant!r}")
            value = self._create(tenant, kind)
        key = bytes.fromhex(value)
        self._cache[(tenant, kind)] = key
        return key

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return {}
        with os.fdopen(fd, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise InputError(
                    f"{self.path}: the consent key file is readable by others (mode {stat.S_IMODE(mode):o}); "
                    f"run chmod 600 {self.path}"
                )
            raw = fh.read()
        try:
            doc = json.loads(raw)
            tenants = doc["tenants"]
            if not isinstance(tenants, dict):
                raise TypeError("tenants is not an object")
            for tenant, keys in tenants.items():
                for kind, value in keys.items():
                    if kind not in KINDS or len(bytes.fromhex(value)) != 32:
                        raise ValueError(f"bad {kind} key for {tenant}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{self.path}: not a segsync key file ({exc})") from None
        return tenants

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _create(self, tenant: str, kind: str) -> str:
        with self._locked():
            tenants = self._read()  # again, under the lock: another process may have just written it
            existing = tenants.get(tenant, {}).get(kind)
            if existing is not None:
                return existing
            value = secrets.token_bytes(32).hex()
            tenants.setdefault(tenant, {})[kind] = value
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({"version": 1, "tenants": tenants}, fh, indent=2, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            return value


__all__ = ["DEFAULT_KEYS_FILE", "ENV_VAR", "KeyFile", "default_path"]
