"""``segsync consent checkpoint`` and ``verify --against`` from the command line (issue 20, item 2)."""

from __future__ import annotations

import json

import sqlalchemy as sa

from consent.schema import consent_chain_heads, consent_events, consent_outbox
from tests.test_consent_cli import run, setup  # noqa: F401 - the CLI fixture and runner


def test_checkpoint_then_truncation_with_a_fixed_head_is_found_only_against_it(setup, tmp_path) -> None:  # noqa: F811
    config, url = setup
    for email in ("a@x.com", "b@x.com", "c@x.com"):
        run("record", config, "--tenant", "harbor", "--email", email, "--purpose", "profiling", "--state", "withdrawn")
    cp = tmp_path / "harbor.checkpoint.json"
    out = run("checkpoint", config, "--out", str(cp), "--json")
    assert out["tenants"] == {"harbor": 3}
    assert json.loads(cp.read_text())["tenants"]["harbor"]["seq"] == 3
    assert run("verify", config, "--against", str(cp), "--json")["ok"] is True
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # cut the last row and move the head back: a consistent, shorter chain
        conn.execute(sa.text("DROP TRIGGER consent_events_no_delete"))
        last = conn.execute(sa.select(consent_events).where(consent_events.c.seq == 3)).mappings().one()
        prev = conn.execute(sa.select(consent_events).where(consent_events.c.seq == 2)).mappings().one()
        conn.execute(sa.delete(consent_events).where(consent_events.c.id == last["id"]))
        conn.execute(sa.update(consent_chain_heads).values(last_id=prev["id"], last_seq=2, last_hash=prev["hash"]))
    engine.dispose()
    assert run("verify", config, "--json")["ok"] is True  # nothing inside the database can tell
    result = run("verify", config, "--against", str(cp), "--json", code=1)
    assert "truncated" in result["first_broken"]["reason"]
    assert "truncated" in run("verify", config, "--against", str(cp), code=1)


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(setup, tmp_path) -> None:  # noqa: F811
    config, _ = setup
    bad = tmp_path / "bad.json"
    bad.write_text('{"tenants": 1}')
    result = run("verify", config, "--against", str(bad), code=2)
    assert "not a segsync consent checkpoint" in result


def test_an_outbox_status_edited_after_the_checkpoint_is_found_by_verify_against_it(setup, tmp_path) -> None:  # noqa: F811
    config, url = setup
    run("record", config, "--tenant", "harbor", "--email", "a@x.com", "--purpose", "email_marketing",
        "--state", "withdrawn")
    cp = tmp_path / "harbor.checkpoint.json"
    run("checkpoint", config, "--out", str(cp), "--json")
    counted = json.loads(cp.read_text())["tenants"]["harbor"]["outbox_max_id"]
    run("record", config, "--tenant", "harbor", "--email", "b@x.com", "--purpose", "email_marketing",
        "--state", "withdrawn")  # its opt-out actions are written after the checkpoint
    assert run("verify", config, "--against", str(cp), "--json")["ok"] is True
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # "delivered", by hand: the vendor would never hear of the opt-out
        late = conn.execute(sa.select(consent_outbox.c.id).where(consent_outbox.c.id > counted)).scalars().all()
        assert late, "the second opt-out queued nothing after the checkpoint"
        conn.execute(sa.update(consent_outbox).where(consent_outbox.c.id == late[0]).values(status="done"))
    engine.dispose()
    result = run("verify", config, "--against", str(cp), "--json", code=1)
    assert "outbox row" in result["first_broken"]["reason"] and "MAC" in result["first_broken"]["reason"]
