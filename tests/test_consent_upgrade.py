"""Revision 0003 on a ledger written before it: the old unkeyed rows stay valid, new rows are keyed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from consent.chain import GENESIS, row_hash
from consent.ledger import Ledger
from consent.outbox import Outbox
from consent.policy import WITHDRAWN, subject_key
from consent.propagate import record_and_enqueue
from consent.schema import consent_chain_heads, consent_events, consent_outbox
from consent.signals import ConsentSignal
from core.errors import InputError
from sync.store.migrate import upgrade
from sync.store.sqlcore import make_engine

OLD_KEY = b"harbor-webhook-secret-0123456789"  # before 0003 the pseudonym key defaulted to the webhook secret
T = datetime(2025, 6, 1, tzinfo=UTC)


def _legacy_ledger(engine: sa.Engine) -> None:
    """Two events and an outbox row as revision 0002 wrote them: plain SHA-256, no MACs."""
    prev, last_id = GENESIS, 0
    with engine.begin() as c:
        for seq, email in enumerate(["ann@example.com", "bob@example.com"], start=1):
            row = {"tenant_id": "harbor", "seq": seq, "subject": email, "subject_key": subject_key(OLD_KEY, email),
                   "purpose": "profiling", "state": WITHDRAWN, "basis": "legitimate_interest", "source": "cli",
                   "occurred_at": T, "recorded_at": T, "notice_version": None, "evidence": None,
                   "evidence_personal": None, "personal_digest": None, "idempotency_key": None, "prev_hash": prev}
            row["hash"] = prev = row_hash(row, prev, None)
            last_id = c.execute(sa.insert(consent_events).values(**row).returning(consent_events.c.id)).scalar_one()
        c.execute(sa.text("INSERT INTO consent_chain_heads (tenant_id, last_id, last_seq, last_hash) "
                          "VALUES ('harbor', :i, 2, :h)"), {"i": last_id, "h": prev})
        c.execute(sa.insert(consent_outbox).values(
            tenant_id="harbor", subject_key=subject_key(OLD_KEY, "ann@example.com"), email="ann@example.com",
            destination="crm.segments", payload={"purposes": ["profiling"]}, source_event=1, status="pending",
            attempts=0, next_attempt_at=T, created_at=T, scrub_on_done=False))


def test_upgrading_keeps_old_rows_verifiable_and_keys_new_ones(db_url) -> None:
    engine = make_engine(db_url)
    upgrade(engine, "0002")
    _legacy_ledger(engine)
    upgrade(engine)
    with engine.connect() as c:
        head = c.execute(sa.select(consent_chain_heads)).mappings().one()
    assert (head["keyed_from_seq"], head["key_check"]) == (3, None)
    ledger = Ledger(engine, lambda t: OLD_KEY)
    outbox = Outbox(engine, mac_key=ledger.chain_key)
    assert ledger.verify().ok
    record_and_enqueue(ledger, outbox, "harbor", [
        ConsentSignal("cy@example.com", "profiling", WITHDRAWN, "legitimate_interest", "cli", T)], ["crm.segments"])
    assert ledger.verify().ok and ledger.verify(against=ledger.checkpoint()).ok
    assert ledger.status("harbor", "ann@example.com")["profiling"].state == WITHDRAWN  # old pseudonyms still found
    with engine.connect() as c:
        new = c.execute(sa.select(consent_events).where(consent_events.c.seq == 3)).mappings().one()
    assert new["hash"] != row_hash(new, new["prev_hash"], None)  # keyed from here on
    # Upgrading without carrying the old key over is refused, never a silent "nobody is known".
    with pytest.raises(InputError, match="pseudonym_key"):
        Ledger(engine, lambda t: b"a-freshly-generated-key-0123456").status("harbor", "ann@example.com")
    engine.dispose()
