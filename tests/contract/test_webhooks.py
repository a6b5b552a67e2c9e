"""Webhook contract, through the webhook HTTP app as vendors reach it: a valid signature is accepted,
a wrong one refused with nothing written, and a replay writes nothing again."""

from __future__ import annotations

import asyncio

import httpx
import sqlalchemy as sa

from connectors.registry import webhook_handlers
from consent.ledger import Ledger
from consent.outbox import Outbox
from consent.schema import consent_events, consent_outbox, webhook_receipts
from consent.webhook import TenantHooks, create_app
from sync.store import open_store
from tests.contract.subjects import WEBHOOKS, Subject, needs

SECRET = "contract-webhook-secret-0123456789"
POLICY = {"email_marketing": "consent", "profiling": "legitimate_interest"}


class Hub:
    """The webhook app for one tenant over SQLite, driven in-process."""

    def __init__(self, url: str, subject: Subject, list_id: str) -> None:
        self.store = open_store(url)
        vendors = {"hubspot": {"client_secret": subject.sb.hubspot_client_secret},
                   "mailchimp": {"list_id": list_id}}
        hooks = TenantHooks(SECRET, POLICY, vendors=vendors, resolve=lambda source, vid: "ann@example.com")
        app = create_app({"t1": hooks}, Ledger(self.store.engine, lambda t: b"contract-pseudonym-key-0123456789"),
                         Outbox(self.store.engine), vendors=webhook_handlers())
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.loop.run_until_complete(self.client.post(path, content=body, headers=headers))

    def rows(self) -> tuple[int, ...]:
        query = sa.select(*(sa.select(sa.func.count()).select_from(t).scalar_subquery()
                            for t in (consent_events, consent_outbox, webhook_receipts)))
        with self.store.engine.connect() as conn:
            return tuple(conn.execute(query).one())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()
        self.store.close()


def test_webhook_signature_checked_and_replays_deduplicated(subject: Subject, sqlite_url: str) -> None:
    needs(subject, WEBHOOKS)
    list_id = subject.sb.mailchimp_list_id
    hub = Hub(sqlite_url, subject, list_id)
    try:
        wrong = hub.post(*subject.webhook("t1", SECRET, list_id, valid=False))
        assert wrong.status_code == 401 and hub.rows() == (0, 0, 0)
        request = subject.webhook("t1", SECRET, list_id, valid=True)
        first = hub.post(*request)
        assert first.status_code == 200, first.text
        written = hub.rows()
        assert written[0] >= 1 and written[2] == 1  # the opt-out recorded, with its receipt
        replay = hub.post(*request)
        assert replay.status_code == 200 and hub.rows() == written  # the same delivery again: nothing new
    finally:
        hub.close()
