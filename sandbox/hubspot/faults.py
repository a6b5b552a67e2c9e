"""Per-record failures injected into batch writes, so tests get 207s with chosen or seeded errors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass
class BatchFailures:
    """Inputs of batch create/update/upsert that fail on purpose (a 207 with these in ``errors``).

    An input fails when its id (or email) is in ``ids``, or - deterministically for a given seed -
    for a ``rate`` share of ids, by hashing seed and id (so retries of the same id fail again).
    ``remaining`` caps how many injected failures are still to come (None = no cap).
    """

    ids: set[str] = field(default_factory=set)
    rate: float = 0.0
    seed: int = 0
    remaining: int | None = None
    message: str = "Simulated failure for this record"
    category: str = "VALIDATION_ERROR"

    def hits(self, ref: str) -> bool:
        """Whether this input should fail now (consumes ``remaining``)."""
        if self.remaining is not None and self.remaining <= 0:
            return False
        chosen = ref.lower() in self.ids
        if not chosen and self.rate > 0:
            digest = hashlib.sha256(f"{self.seed}:{ref.lower()}".encode()).digest()
            chosen = int.from_bytes(digest[:8], "big") / 2**64 < self.rate
        if chosen and self.remaining is not None:
            self.remaining -= 1
        return chosen
