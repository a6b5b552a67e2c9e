"""The tamper suite (issue 20, item 2): an attacker with SQL rights but not the key file.

Each case drops the append-only triggers (as the database owner could), tampers with the ledger or
the outbox the way the adversarial review did, and must be caught by ``verify`` given the
checkpoint taken before. The attacker recomputes hashes with everything the database holds
(plain SHA-256 and the stored rows); the chain key never leaves the key file. Runs on SQLite and
PostgreSQL (``db_url``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from consent.chain import GENESIS, row_hash
from consent.ledger import Ledger
from consent.outbox import Outbox, drain
from consent.policy import CONSENT, GRANTED, LEGITIMATE_INTEREST, WITHDRAWN
from consent.propagate import record_and_enqueue
from consent.schema import consent_chain_heads, consent_events, consent_outbox
from consent.signals import ConsentSignal
from sync.store import open_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = {"email_marketing": CONSENT, "profiling": LEGITIMATE_INTEREST}
ev, ob, hd = consent_events.c, consent_outbox.c, consent_chain_heads.c
DESTS = ("esp.unsubscribe", "crm.optout")


def key_for(tenant: str) -> bytes:
    return f"key-file-pseudonym-key-of-{tenant}".encode()


def _sig(email: str, purpose: str, state: str, day: int, evidence: dict[str, Any] | None = None) -> ConsentSignal:
    basis = POLICY.get(purpose, CONSENT)
    return ConsentSignal(
        email, purpose, state, basis, "cli", T0 + timedelta(days=day), "n1" if state == GRANTED else None, evidence
    )


class World:
    """A populated ledger and outbox, with a checkpoint taken, and the attacker's helpers."""

    def __init__(self, url: str) -> None:
        self.store = open_store(url)
        self.engine = self.store.engine
        self.ledger = Ledger(self.engine, key_for)
        self.outbox = Outbox(self.engine, mac_key=self.ledger.chain_key, max_attempts=1)
        L, Q = self.ledger, self.outbox
        record_and_enqueue(L, Q, "harbor", [
            _sig("ann@example.com", "email_marketing", GRANTED, 1, {"ip": "192.0.2.1"}),
            _sig("bob@example.com", "email_marketing", GRANTED, 2),
            _sig("carol@example.com", "profiling", WITHDRAWN, 3, {"ip": "192.0.2.3", "request_id": "r3"}),
            _sig("ann@example.com", "email_marketing", WITHDRAWN, 4),
            _sig("dave@example.com", "email_marketing", GRANTED, 5),
        ], DESTS)
        L.erase("harbor", "dave@example.com")
        drain(Q, {"esp.unsubscribe": lambda a: None, "crm.optout": self._fail})
        record_and_enqueue(L, Q, "harbor", [_sig("erin@example.com", "email_marketing", WITHDRAWN, 7)], DESTS)
        record_and_enqueue(L, Q, "other", [_sig("zed@example.com", "email_marketing", WITHDRAWN, 1)], DESTS)
        self.checkpoint = json.loads(json.dumps(L.checkpoint()))  # as it would come back from the file

    @staticmethod
    def _fail(action: Any) -> None:
        raise RuntimeError("vendor refused")

    def close(self) -> None:
        self.store.close()

    # -- the attacker ---------------------------------------------------------------------------

    def drop_guards(self, c: sa.Connection) -> None:
        if c.dialect.name == "postgresql":
            c.execute(sa.text("DROP TRIGGER IF EXISTS consent_events_append_only ON consent_events"))
        else:
            c.execute(sa.text("DROP TRIGGER IF EXISTS consent_events_no_delete"))
            c.execute(sa.text("DROP TRIGGER IF EXISTS consent_events_erasure_only"))

    def rows(self, c: sa.Connection, tenant: str = "harbor") -> list[dict[str, Any]]:
        return [dict(r) for r in c.execute(
            sa.select(consent_events).where(ev.tenant_id == tenant).order_by(ev.seq)).mappings()]

    def row_of(self, c: sa.Connection, email: str, state: str) -> dict[str, Any]:
        return next(r for r in self.rows(c) if r["subject"] == email and r["state"] == state)

    def rechain(self, c: sa.Connection, rows: list[dict[str, Any]], tenant: str = "harbor") -> None:
        """Rewrite ``rows`` as the whole chain: renumbered, rehashed (unkeyed: no key), head moved."""
        c.execute(sa.delete(consent_events).where(ev.tenant_id == tenant))
        prev = GENESIS
        for seq, row in enumerate(rows, start=1):
            row.update(seq=seq, prev_hash=prev)
            row["hash"] = prev = row_hash(row, prev, None)
            row["id"] = c.execute(sa.insert(consent_events).values(**row).returning(ev.id)).scalar_one()
        last = rows[-1] if rows else {"id": 0, "seq": 0, "hash": GENESIS}
        c.execute(sa.update(consent_chain_heads).where(hd.tenant_id == tenant)
                  .values(last_id=last["id"], last_seq=last["seq"], last_hash=last["hash"]))

    def forged(self, c: sa.Connection, like: dict[str, Any], **changes: Any) -> dict[str, Any]:
        row = {k: v for k, v in like.items() if k != "id"}
        row.update(changes)
        return row


def _append_forged_grant(w: World, c: sa.Connection, move_head: bool) -> None:
    rows = w.rows(c)
    last = rows[-1]
    ann = w.row_of(c, "ann@example.com", WITHDRAWN)
    row = w.forged(c, ann, state=GRANTED, seq=last["seq"] + 1, prev_hash=last["hash"], idempotency_key=None,
                   occurred_at=T0 + timedelta(days=30), source="preference_center", notice_version="n1")
    row["hash"] = row_hash(row, last["hash"], None)
    new_id = c.execute(sa.insert(consent_events).values(**row).returning(ev.id)).scalar_one()
    if move_head:
        c.execute(sa.update(consent_chain_heads).where(hd.tenant_id == "harbor")
                  .values(last_id=new_id, last_seq=row["seq"], last_hash=row["hash"]))


def t_insert_grant_and_move_head(w, c): _append_forged_grant(w, c, move_head=True)
def t_insert_grant_keep_head(w, c): _append_forged_grant(w, c, move_head=False)


def t_insert_in_middle_and_recompute(w, c):
    rows = w.rows(c)
    extra = w.forged(c, rows[2], state=GRANTED, idempotency_key=None, notice_version="n1")
    w.rechain(c, [{k: v for k, v in r.items() if k != "id"} for r in rows[:3]] + [extra]
              + [{k: v for k, v in r.items() if k != "id"} for r in rows[3:]])


def t_edit_state(w, c):
    row = w.row_of(c, "ann@example.com", WITHDRAWN)
    c.execute(sa.update(consent_events).where(ev.id == row["id"]).values(state=GRANTED))


def _edit_and_recompute(w, c, email, old_state, **changes):
    rows = w.rows(c)
    for r in rows:
        if r["subject"] == email and r["state"] == old_state:
            r.update(changes)
    w.rechain(c, rows)


def t_edit_state_and_recompute(w, c): _edit_and_recompute(w, c, "ann@example.com", WITHDRAWN, state=GRANTED)
def t_edit_time_and_recompute(w, c):
    _edit_and_recompute(w, c, "ann@example.com", GRANTED, occurred_at=T0 + timedelta(days=40))


def t_move_event_to_other_subject_and_recompute(w, c):
    ann = w.row_of(c, "ann@example.com", WITHDRAWN)
    _edit_and_recompute(w, c, "bob@example.com", GRANTED, subject_key=ann["subject_key"], subject="ann@example.com")


def t_delete_middle(w, c):
    c.execute(sa.delete(consent_events).where(ev.id == w.row_of(c, "ann@example.com", WITHDRAWN)["id"]))


def t_delete_middle_renumber_and_recompute(w, c):
    w.rechain(c, [r for r in w.rows(c) if not (r["subject"] == "ann@example.com" and r["state"] == WITHDRAWN)])


def t_delete_last(w, c):
    c.execute(sa.delete(consent_events).where(ev.id == w.rows(c)[-1]["id"]))


def t_delete_last_and_fix_head(w, c):
    rows = w.rows(c)
    c.execute(sa.delete(consent_events).where(ev.id == rows[-1]["id"]))
    c.execute(sa.update(consent_chain_heads).where(hd.tenant_id == "harbor")
              .values(last_id=rows[-2]["id"], last_seq=rows[-2]["seq"], last_hash=rows[-2]["hash"]))


def t_truncate_keep_head(w, c):
    c.execute(sa.delete(consent_events).where(ev.tenant_id == "harbor"))


def t_truncate_and_reset_head(w, c):
    c.execute(sa.delete(consent_events).where(ev.tenant_id == "harbor"))
    c.execute(sa.update(consent_chain_heads).where(hd.tenant_id == "harbor")
              .values(last_id=0, last_seq=0, last_hash=GENESIS))


def t_tenant_wipe(w, c):
    for table in (consent_events, consent_chain_heads, consent_outbox):
        c.execute(sa.delete(table).where(table.c.tenant_id == "harbor"))


def t_fake_erasure(w, c):
    row = w.row_of(c, "ann@example.com", WITHDRAWN)
    c.execute(sa.update(consent_events).where(ev.id == row["id"])
              .values(subject=None, evidence_personal=None, erased_at=T0 + timedelta(days=9)))


def t_fake_erasure_reusing_a_real_erasure_time(w, c):
    dave_erasure = next(r for r in w.rows(c) if r["source"] == "erasure")
    row = w.row_of(c, "ann@example.com", WITHDRAWN)
    c.execute(sa.update(consent_events).where(ev.id == row["id"])
              .values(subject=None, erased_at=dave_erasure["occurred_at"]))


def t_null_subject(w, c):
    c.execute(
        sa.update(consent_events).where(ev.id == w.row_of(c, "bob@example.com", GRANTED)["id"]).values(subject=None)
    )


def t_swap_email(w, c):
    c.execute(sa.update(consent_events).where(ev.id == w.row_of(c, "bob@example.com", GRANTED)["id"])
              .values(subject="ann@example.com"))


def t_edit_personal_evidence(w, c):
    row = w.row_of(c, "carol@example.com", WITHDRAWN)
    c.execute(sa.update(consent_events).where(ev.id == row["id"]).values(evidence_personal={"ip": "203.0.113.9"}))


def t_drop_personal_evidence(w, c):
    row = w.row_of(c, "carol@example.com", WITHDRAWN)
    c.execute(sa.update(consent_events).where(ev.id == row["id"]).values(evidence_personal=None))


def t_reorder_two_rows(w, c):
    rows = w.rows(c)
    a, b = rows[1], rows[2]
    c.execute(sa.update(consent_events).where(ev.id == a["id"]).values(seq=-1))
    c.execute(sa.update(consent_events).where(ev.id == b["id"]).values(seq=a["seq"]))
    c.execute(sa.update(consent_events).where(ev.id == a["id"]).values(seq=b["seq"]))


def t_downgrade_to_unkeyed_chain(w, c):
    rows = w.rows(c)
    rows[3]["state"] = GRANTED
    w.rechain(c, rows)
    c.execute(sa.update(consent_chain_heads).where(hd.tenant_id == "harbor")
              .values(keyed_from_seq=len(rows) + 1, outbox_keyed_from_id=10**9))


def _outbox_row(c, status):
    return c.execute(sa.select(consent_outbox).where(ob.tenant_id == "harbor", ob.status == status)
                     .order_by(ob.id)).mappings().first()


def t_outbox_pending_marked_done(w, c):
    c.execute(sa.update(consent_outbox).where(ob.id == _outbox_row(c, "pending")["id"])
              .values(status="done", done_at=T0 + timedelta(days=8)))


def t_outbox_failed_marked_done(w, c):
    c.execute(sa.update(consent_outbox).where(ob.id == _outbox_row(c, "failed")["id"])
              .values(status="done", done_at=T0 + timedelta(days=8), last_error=None))


def t_outbox_destination_changed(w, c):
    c.execute(sa.update(consent_outbox).where(ob.id == _outbox_row(c, "pending")["id"]).values(destination="esp.tags"))


def t_outbox_row_deleted(w, c):
    c.execute(sa.delete(consent_outbox).where(ob.id == _outbox_row(c, "pending")["id"]))


def t_outbox_mac_copied_from_a_done_row(w, c):
    done = _outbox_row(c, "done")
    c.execute(sa.update(consent_outbox).where(ob.id == _outbox_row(c, "pending")["id"])
              .values(status="done", done_at=done["done_at"], mac=done["mac"]))


TAMPERS: dict[str, Callable[[World, sa.Connection], None]] = {
    name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("t_") and callable(fn)
}


@pytest.fixture
def world(db_url):
    w = World(db_url)
    yield w
    w.close()


def test_the_untouched_ledger_verifies_before_and_after_more_work(world: World) -> None:
    assert world.ledger.verify(against=world.checkpoint).ok
    # Work after the checkpoint (appends, deliveries, an erasure) is not mistaken for tampering.
    record_and_enqueue(world.ledger, world.outbox, "harbor",
                       [_sig("fay@example.com", "email_marketing", WITHDRAWN, 10)], DESTS)
    drain(world.outbox, {d: (lambda a: None) for d in DESTS})
    world.ledger.erase("harbor", "ann@example.com")
    result = world.ledger.verify(against=world.checkpoint)
    assert result.ok, result.first_broken


def test_there_are_at_least_22_tamper_kinds() -> None:
    assert len(TAMPERS) >= 22


@pytest.mark.parametrize("kind", sorted(TAMPERS))
def test_each_tamper_kind_is_detected_by_verify_with_the_checkpoint(world: World, kind: str) -> None:
    with world.engine.begin() as c:
        world.drop_guards(c)
    with world.engine.begin() as c:
        TAMPERS[kind](world, c)
    result = world.ledger.verify(against=world.checkpoint)
    assert not result.ok, f"{kind} went undetected"
    assert result.first_broken is not None and result.first_broken.tenant_id == "harbor"


def test_a_forged_grant_flips_nobody_and_is_named(world: World) -> None:
    """The review's exploit: one inserted grant with the head moved passed verify and flipped ann."""
    with world.engine.begin() as c:
        world.drop_guards(c)
        t_insert_grant_and_move_head(world, c)
    result = world.ledger.verify()  # caught even without the checkpoint: the row's keyed hash is wrong
    assert not result.ok and "keyed hash" in result.first_broken.reason


def test_an_edited_checkpoint_is_refused(world: World) -> None:
    doc = json.loads(json.dumps(world.checkpoint))
    doc["tenants"]["harbor"]["seq"] -= 1  # hide the last row's truncation
    result = world.ledger.verify(against=doc)
    assert not result.ok and "signature" in result.first_broken.reason


# -- outbox rows written after the last checkpoint (issue 20, "outbox status edits") -----------------------------


def _work_after_the_checkpoint(w: World) -> None:
    """Three more opt-outs after the checkpoint: one delivered, one refused (failed), one still pending."""
    for day, email in ((20, "gus@example.com"), (21, "hal@example.com"), (22, "ida@example.com")):
        record_and_enqueue(w.ledger, w.outbox, "harbor", [_sig(email, "email_marketing", WITHDRAWN, day)], DESTS)
        if email == "gus@example.com":
            drain(w.outbox, {d: (lambda a: None) for d in DESTS})
        elif email == "hal@example.com":
            drain(w.outbox, {d: w._fail for d in DESTS})


def _late(c: sa.Connection, w: World, status: str | None = None) -> list[dict[str, Any]]:
    """Outbox rows of harbor newer than anything the checkpoint counted, oldest first."""
    since = w.checkpoint["tenants"]["harbor"]["outbox_max_id"]
    query = sa.select(consent_outbox).where(ob.tenant_id == "harbor", ob.id > since).order_by(ob.id)
    rows = [dict(r) for r in c.execute(query).mappings()]
    return [r for r in rows if status is None or r["status"] == status]


def l_pending_marked_done(w, c):
    c.execute(sa.update(consent_outbox).where(ob.id == _late(c, w, "pending")[0]["id"])
              .values(status="done", done_at=T0 + timedelta(days=30)))


def l_failed_marked_done(w, c):
    c.execute(sa.update(consent_outbox).where(ob.id == _late(c, w, "failed")[0]["id"])
              .values(status="done", done_at=T0 + timedelta(days=30)))


def l_done_marked_pending(w, c):
    c.execute(sa.update(consent_outbox).where(ob.id == _late(c, w, "done")[0]["id"])
              .values(status="pending", done_at=None))


def l_mac_copied_from_a_later_done_row(w, c):
    done = _late(c, w, "done")[0]
    c.execute(sa.update(consent_outbox).where(ob.id == _late(c, w, "pending")[0]["id"])
              .values(status="done", done_at=done["done_at"], mac=done["mac"]))


def l_destination_changed(w, c):
    c.execute(sa.update(consent_outbox).where(ob.id == _late(c, w, "pending")[0]["id"])
              .values(destination="esp.tags"))


def l_link_rewritten(w, c):
    row = _late(c, w, "pending")[0]
    c.execute(sa.update(consent_outbox).where(ob.id == row["id"])
              .values(payload={**row["payload"], "prev_outbox_id": 0}))


def l_middle_row_deleted(w, c):
    c.execute(sa.delete(consent_outbox).where(ob.id == _late(c, w, "failed")[0]["id"]))


def l_first_row_after_the_checkpoint_deleted(w, c):
    c.execute(sa.delete(consent_outbox).where(ob.id == _late(c, w)[0]["id"]))


LATE_TAMPERS: dict[str, Callable[[World, sa.Connection], None]] = {
    name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("l_") and callable(fn)
}


@pytest.mark.parametrize("kind", sorted(LATE_TAMPERS))
def test_outbox_rows_written_after_the_checkpoint_are_guarded_too(world: World, kind: str) -> None:
    _work_after_the_checkpoint(world)
    assert world.ledger.verify(against=world.checkpoint).ok
    with world.engine.begin() as c:
        assert {r["status"] for r in _late(c, world)} == {"pending", "done", "failed"}
        LATE_TAMPERS[kind](world, c)
    result = world.ledger.verify(against=world.checkpoint)
    assert not result.ok, f"{kind} went undetected"
    assert result.first_broken is not None and "outbox row" in result.first_broken.reason


def test_the_bound_deleting_the_newest_rows_after_the_checkpoint_leaves_a_consistent_outbox(world: World) -> None:
    """What no check can see (consent.integrity): a whole tail of rows written since the last checkpoint.

    The withdrawal itself stays in the keyed ledger, so segsync's own push still refuses the person.
    """
    _work_after_the_checkpoint(world)
    with world.engine.begin() as c:
        newest = _late(c, world, "pending")
        c.execute(sa.delete(consent_outbox).where(ob.id.in_([r["id"] for r in newest])))
    assert world.ledger.verify(against=world.checkpoint).ok
    decision = world.ledger.decisions("harbor", ["ida@example.com"], POLICY)["ida@example.com"]
    assert not decision.allows("email_marketing")
    # A checkpoint taken after the work counts them: deleting the newest row then is found against it.
    record_and_enqueue(world.ledger, world.outbox, "harbor",
                       [_sig("jon@example.com", "email_marketing", WITHDRAWN, 40)], DESTS)
    checkpoint = json.loads(json.dumps(world.ledger.checkpoint()))
    with world.engine.begin() as c:
        last = c.execute(sa.select(sa.func.max(ob.id)).where(ob.tenant_id == "harbor")).scalar_one()
        c.execute(sa.delete(consent_outbox).where(ob.id == last))
    result = world.ledger.verify(against=checkpoint)
    assert not result.ok and "deleted" in result.first_broken.reason
