"""Wealthbox and Redtail fence every vendor call, not only each batch: once the tenant's lease is lost
(the guard raises), the next request never leaves - the rest of a batch, a retry, the next page. Both
connectors run against their simulators over real HTTP (the contract subjects)."""

from __future__ import annotations

from typing import Any

import pytest

from sync.store.interface import LockLost
from tests.contract.redtail_subject import RedtailSubject
from tests.contract.wealthbox_subject import WealthboxSubject


@pytest.mark.parametrize("make_subject", [WealthboxSubject, RedtailSubject], ids=["wealthbox", "redtail"])
def test_a_lock_lost_mid_push_stops_the_next_call_unsent(make_subject: Any, make_sandbox, tmp_path) -> None:
    subject = make_subject(make_sandbox, tmp_path)
    conn = subject.connect()
    subject.prepare(conn)
    keys = subject.push_keys(6)
    allowed = [2]  # the lease holds for two more calls, then is lost

    def lease_check() -> None:
        if allowed[0] <= 0:
            raise LockLost("the tenant's lock was lost")
        allowed[0] -= 1

    subject.mark()
    conn.fence_calls(lease_check)
    with pytest.raises(LockLost):
        subject.push(conn, keys)
    sent = subject.wb.calls.calls if hasattr(subject, "wb") else subject.rt.calls.calls
    assert len(sent) == 2, [f"{c.method} {c.path}" for c in sent]
    conn.fence_calls(None)  # the guard is gone: calls go out again
    assert {r.outcome for r in subject.push(conn, keys)} == {"sent"}
