"""The pages over HTTP without a browser: login, refusals, headers, tokens, limits, the write path."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from core.errors import ConfigError
from sync.cli import cli
from sync.config.models import load_config_text
from sync.pages import tokens
from sync.pages.cards import auc_interval, gains_points, render_card_html
from sync.pages.lift_data import minimum_detectable_effect, wilson
from sync.pages.preferences import link_key, make_link
from sync.pages.security import RateLimiter
from sync.serve import Service, mask_path
from sync.store import open_store
from tests.configs import consent_yaml

ADMIN = "unit-admin-token-0123456789"
EMAIL = "ann@example.com"


def config_text(db: Path, *, admin: bool = True, firm_token: str | None = None) -> str:
    server = (
        f"server: {{listen: 127.0.0.1:8080, admin_token: {ADMIN}}}" if admin else "server: {listen: 127.0.0.1:8080}"
    )
    pages = f"\n    pages: {{status_token: {firm_token}, colour: '#2e5e1f'}}" if firm_token else ""
    tenants = ""
    for tid, name in (("harbor", "Harbor Wealth"), ("summit", "Summit Advisors")):
        tenants += f"""
  - id: {tid}
    name: {name}
    crm: {{type: csv, contacts: contacts.csv}}
    {consent_yaml(f"{tid}-webhook-secret-0123456")}{pages if tid == "harbor" else ""}"""
    return f"version: 1\nstore: sqlite:///{db}\n{server}\ntenants:{tenants}\n"


class Client:
    """A synchronous face on httpx's ASGI transport (cookies kept), as in test_serve."""

    def __init__(self, app) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")

    def get(self, path: str, **kw) -> httpx.Response:
        return self.loop.run_until_complete(self.http.get(path, **kw))

    def post(self, path: str, **kw) -> httpx.Response:
        kw.setdefault("follow_redirects", True)
        return self.loop.run_until_complete(self.http.post(path, **kw))

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


@pytest.fixture
def make_client(tmp_path):
    made = []

    def make(**kwargs) -> tuple[Client, Service]:
        cfg = load_config_text(config_text(tmp_path / "pages.db", **kwargs))
        service = Service(cfg, tmp_path, store=open_store(cfg.store))
        client = Client(service.app(run_scheduler=False))
        made.append((client, service))
        return client, service

    yield make
    for client, service in made:
        client.close()
        service.store.close()


def _grant(service: Service, tenant: str = "harbor", email: str = EMAIL) -> None:
    for purpose in ("email_marketing", "profiling"):
        service.ledger.record(tenant, email, purpose, "granted", basis="consent", source="import",
                              occurred_at=datetime.now(UTC) - timedelta(days=1), notice_version="n1")


def test_status_pages_are_closed_until_a_token_is_configured(make_client):
    client, _ = make_client(admin=False)
    r = client.get("/")
    assert r.status_code == 403
    assert "server.admin_token" in r.text
    assert client.post("/login", data={"token": "anything-at-all-here"}).status_code == 403


def test_login_is_required_and_scoped(make_client):
    client, _ = make_client(firm_token="harbor-only-token-0123456")
    assert client.get("/").status_code == 401
    assert client.post("/login", data={"token": "wrong-token-000000000"}, follow_redirects=False).status_code == 401
    r = client.get("/", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and "Harbor Wealth" in r.text and "Summit Advisors" in r.text
    firm = Client(client.app)
    assert firm.post("/login", data={"token": "harbor-only-token-0123456"}, follow_redirects=False).status_code == 303
    page = firm.get("/")
    assert "Harbor Wealth" in page.text and "Summit Advisors" not in page.text
    assert firm.get("/firms/summit/runs/1").status_code == 404  # another firm's pages are not this login's
    firm.close()


def test_pages_carry_security_headers_and_no_inline_script(make_client):
    client, _ = make_client()
    r = client.get("/", headers={"Authorization": f"Bearer {ADMIN}"})
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert f'<style nonce="{nonce}">' in r.text
    assert "<script" not in r.text
    assert r.headers["referrer-policy"] == "no-referrer" and r.headers["x-frame-options"] == "DENY"


def test_preference_form_records_through_the_webhook_path_with_provenance(make_client):
    client, service = make_client()
    _grant(service)
    url, _ = make_link(service.cfg.tenant("harbor"), service.store, service.ledger, EMAIL, "http://testserver")
    page = client.get(url, headers={"user-agent": "pages-test/1.0"})
    assert page.status_code == 200 and "an***@example.com" in page.text and EMAIL not in page.text
    form_token = re.search(r'name="form_token" value="([^"]+)"', page.text).group(1)
    r = client.post(url, data={"form_token": form_token, "purpose": "profiling", "action": "save"},
                    headers={"user-agent": "pages-test/1.0"})
    assert r.status_code == 200 and "We have stopped: email marketing" in r.text
    state = service.ledger.status("harbor", EMAIL)
    assert state["email_marketing"].state == "withdrawn" and state["email_marketing"].source == "preference_page"
    assert state["profiling"].state == "granted"
    event = next(h for h in service.ledger.history("harbor", EMAIL) if h.source == "preference_page")
    assert event.notice_version == "privacy-notice-1"
    assert "pages-test/1.0" in json.dumps(event.evidence, default=str)
    assert service.outbox.depth("harbor") > 0  # the opt-out waits for propagation
    again = client.post(url, data={"form_token": form_token, "purpose": "profiling", "action": "save"})
    assert "Nothing changed" in again.text or "Already saved" in again.text
    assert len(service.ledger.history("harbor", EMAIL)) == 3


def test_unsubscribe_all_is_one_click_and_csrf_is_checked(make_client):
    client, service = make_client()
    _grant(service)
    url, _ = make_link(service.cfg.tenant("harbor"), service.store, service.ledger, EMAIL, "http://testserver")
    assert client.post(url, data={"action": "unsubscribe_all"}).status_code == 403  # no form token
    other = tokens.sign(link_key(service.cfg.tenant("harbor"), tokens.FORM), tokens.FORM, {"l": "another-link"},
                        timedelta(hours=1))
    assert client.post(url, data={"form_token": other, "action": "unsubscribe_all"}).status_code == 403
    assert service.ledger.status("harbor", EMAIL)["email_marketing"].state == "granted"
    form_token = re.search(r'name="form_token" value="([^"]+)"', client.get(url).text).group(1)
    r = client.post(url, data={"form_token": form_token, "purpose": "profiling", "action": "unsubscribe_all"})
    assert r.status_code == 200
    assert {p: s.state for p, s in service.ledger.status("harbor", EMAIL).items()} == {
        "email_marketing": "withdrawn", "profiling": "withdrawn"}


def test_a_link_of_one_firm_does_not_open_another_and_unknown_people_get_no_link(make_client):
    client, service = make_client()
    _grant(service)
    harbor, summit = service.cfg.tenant("harbor"), service.cfg.tenant("summit")
    skey = service.ledger.pseudonym("summit", EMAIL)
    forged = tokens.sign(link_key(harbor, tokens.LINK), tokens.LINK, {"t": "summit", "s": skey}, timedelta(days=1))
    assert client.get(f"/p/{forged}").status_code == 403
    with pytest.raises(Exception, match="not a contact of tenant 'summit'"):
        make_link(summit, service.store, service.ledger, EMAIL, "http://x")


def test_tokens_fail_closed_the_same_way():
    key = tokens.derive_key("k" * 20, tokens.LINK)
    good = tokens.sign(key, tokens.LINK, {"s": "x"}, timedelta(minutes=5))
    assert tokens.verify(key, tokens.LINK, good)["s"] == "x"
    # Tamper with a middle character of the signature: the last base64 character carries padding bits that a
    # decoder may ignore, so changing it does not always change the bytes.
    i = len(good) - 10
    tampered = good[:i] + ("A" if good[i] != "A" else "B") + good[i + 1:]
    for bad, purpose in ((good, tokens.FORM), (tampered, tokens.LINK),
                         ("nonsense", tokens.LINK), (good + ".x", tokens.LINK)):
        with pytest.raises(tokens.BadToken):
            tokens.verify(key, purpose, bad)
    with pytest.raises(tokens.BadToken):
        tokens.verify(key, tokens.LINK, good, now=datetime.now(UTC) + timedelta(minutes=6))
    with pytest.raises(tokens.BadToken):  # the same token under another purpose's key
        tokens.verify(tokens.derive_key("k" * 20, tokens.FORM), tokens.LINK, good)


def test_rate_limiter_refuses_past_the_limit_per_client():
    limiter = RateLimiter(limit=3, window=3600)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")


def test_preference_tokens_are_masked_in_access_logs():
    assert mask_path("/p/eyJhbGciOi.abcdef?x=1") == "/p/***?x=1"


def test_consent_link_command(tmp_path, make_client):
    _, service = make_client()
    _grant(service)
    path = tmp_path / "segsync.yaml"
    path.write_text(config_text(tmp_path / "pages.db"))
    ok = CliRunner().invoke(cli, ["consent", "link", str(path), "--tenant", "harbor", EMAIL, "--json"])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert doc["url"].startswith("http://127.0.0.1:8080/p/") and "ann" not in doc["url"]
    unknown = CliRunner().invoke(cli, ["consent", "link", str(path), "--tenant", "harbor", "nobody@example.com"])
    assert unknown.exit_code == 2 and "not a contact" in unknown.output


def test_short_admin_token_is_a_config_error(tmp_path):
    text = config_text(tmp_path / "x.db").replace(ADMIN, "short")
    with pytest.raises(ConfigError) as err:
        load_config_text(text)
    assert "server.admin_token" in str(err.value.args) + str(getattr(err.value, "problems", ""))


def test_card_math_and_an_insufficient_card_says_so():
    lo, hi = auc_interval(0.8, 50, 450)
    assert lo < 0.8 < hi and hi - lo < 0.2
    assert auc_interval(0.8, None, 10) is None
    deciles = [{"decile": i, "n": 10, "mean_predicted": i / 10, "observed_rate": i / 10} for i in range(10)]
    pts = gains_points(deciles)
    assert pts[0] == (0.0, 0.0) and pts[-1] == (1.0, 1.0) and pts[1][1] > 0.1  # best decile first beats random
    html = render_card_html({"score": "s", "kind": "propensity", "verdict": {"verdict": "insufficient_data",
                                                                             "reason": "only 3 positives"}}, firm="F")
    assert "Insufficient data" in html and "only 3 positives" in html and "<polyline" not in html


def test_lift_statistics():
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and 0 < hi < 0.2
    assert minimum_detectable_effect(0, 10, 0.1) is None
    assert minimum_detectable_effect(900, 100, 0.1) > minimum_detectable_effect(9000, 1000, 0.1)


def test_card_charts_are_svg_elements_with_escaped_labels():
    card = {
        "score": "s",
        "kind": "propensity",
        "method": "time_split",
        "verdict": {"verdict": "ok"},
        "model": {
            "roc_auc": 0.7,
            "positives": 40,
            "negatives": 200,
            "calibration": [
                {"decile": i, "n": 24, "mean_predicted": i / 10, "observed_rate": i / 12} for i in range(10)
            ],
        },
        "baseline": {"roc_auc": 0.6, "rule": "recency"},
        "top_features": [{"feature": "opens<90d>", "importance": 0.05, "std": 0.01}],
    }
    html = render_card_html(card, firm="F", scores=[0.1, 0.2, 0.2, 0.9])
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg"') == 4
    assert "opens&lt;90d&gt;" in html and "opens<90d>" not in html and "&lt;svg" not in html
    assert "Better than the naive baseline" in html
