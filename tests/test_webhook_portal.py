"""HubSpot webhook ``portalId`` (issue 20, low): with ``crm.portal_id`` set, another account's events are
dropped unrecorded (one app secret signs every account the app is installed in). The HubSpot vendor
setting ``portal_id`` (from ``HubSpotCrm.webhook_settings()``) carries it."""

from __future__ import annotations

import httpx

from connectors.registry import webhook_handlers
from consent.policy import WITHDRAWN
from consent.webhook import TenantHooks, create_app
from sandbox.webhooks import hubspot_event
from tests.test_consent_webhook import BASE, HUBSPOT_IDS, HUBSPOT_SECRET, POLICY, SECRET, Env


def test_events_of_another_portal_are_ignored_and_ours_recorded(sqlite_url) -> None:
    env = Env(sqlite_url)
    try:
        settings = {"client_secret": HUBSPOT_SECRET, "portal_id": "62515"}
        hooks = TenantHooks(SECRET, POLICY, vendors={"hubspot": settings},
                            resolve=lambda source, vid: HUBSPOT_IDS.get(vid) if source == "hubspot" else None)
        env.app = create_app({"harbor": hooks}, env.ledger, env.outbox, vendors=webhook_handlers())
        env.loop.run_until_complete(env.client.aclose())
        env.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=env.app), base_url=BASE)
        before = env.counts()
        foreign = hubspot_event("contact.propertyChange", 101, property_name="hs_email_optout", property_value="true",
                                event_id=11, portal_id=99999)
        r = env.hubspot([foreign])
        assert r.status_code in (200, 202, 204), r.text
        assert env.counts() == before, "an event of another HubSpot account was recorded"
        r = env.hubspot([{**foreign, "portalId": 62515, "eventId": 12}])
        assert r.status_code == 200, r.text
        assert env.ledger.status("harbor", "ann@example.com")["email_marketing"].state == WITHDRAWN
    finally:
        env.close()
