"""The pages in a real browser: headless Chromium from the system packages, driven by Playwright.

One demo-like world for the module: two firms, each with its own sandbox HubSpot and Mailchimp,
one full sync each, model cards written by ``segsync score --report``, and ``segsync serve``'s app
on a loopback port. Screenshots go to test-artifacts/screenshots/ (not committed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from sandbox.demo import WebServer, fresh_connectors, write_config
from sync.cli import cli
from sync.config.models import load_config
from sync.pages import tokens
from sync.pages.preferences import link_key
from sync.run.pipeline import RunOptions, TenantRun
from sync.serve import Service
from sync.store import open_store
from tests.conftest import IN_CI

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
ADMIN = "pages-test-admin-token-0123456789"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def _require_browser() -> Any:
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = problem or "playwright is not installed (pip install -e '.[test]')"
        sync_playwright = None
    if problem:
        if IN_CI:
            pytest.fail(problem + " (CI must run the browser tests)")
        pytest.skip(problem)
    return sync_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _require_browser()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Two firms synced once against their sandboxes, model cards written, the app served."""
    from sandbox import start_sandbox

    _require_browser()  # no need to build the world when the browser tests cannot run
    out = tmp_path_factory.mktemp("pages-demo")
    boxes = [start_sandbox(contacts=1000, seed=7, hubspot_plan="unlimited"),
             start_sandbox(contacts=300, seed=8, hubspot_plan="unlimited")]
    try:
        config = write_config(out, boxes)
        config.write_text(config.read_text().replace(
            "server: {listen: 127.0.0.1:8080}", "server: {listen: 127.0.0.1:8080, admin_token: \"${PAGES_ADMIN}\"}"))
        os.environ["PAGES_ADMIN"] = ADMIN  # the CLI below reads the same config
        cfg = load_config(config)
        store = open_store(cfg.store)
        for tenant in cfg.tenants:
            crm, esp = fresh_connectors(tenant)
            TenantRun(cfg, tenant, store, crm, esp, RunOptions()).run()
        result = CliRunner().invoke(cli, ["score", str(config), "--tenant", "harbor-wealth", "--report"])
        assert result.exit_code == 0, result.output
        service = Service(cfg, config.parent, store=store)
        with WebServer(service.app(run_scheduler=False)) as web:
            yield {"cfg": cfg, "config": config, "store": store, "service": service, "url": web.url, "boxes": boxes}
        store.close()
    finally:
        os.environ.pop("PAGES_ADMIN", None)
        for box in boxes:
            box.stop()


def _page(browser: Any, errors: list[str] | None = None) -> Any:
    page = browser.new_page()
    if errors is not None:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
    return page


def _login(page: Any, url: str) -> None:
    page.goto(url + "/login")
    page.fill("#token", ADMIN)
    page.click("button[type=submit]")


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_status_page_without_login_is_refused(browser, world):
    page = _page(browser)
    response = page.goto(world["url"] + "/")
    assert response.status == 401
    assert page.locator("#token").count() == 1  # the sign-in form, nothing of the firms
    assert "Harbor Wealth" not in page.content()
    _shot(page, "login")
    page.close()


def test_status_page_shows_both_demo_firms(browser, world):
    errors: list[str] = []
    page = _page(browser, errors)
    _login(page, world["url"])
    assert page.url.rstrip("/") == world["url"]
    for tenant in world["cfg"].tenants:
        section = page.locator(f"section[data-tenant='{tenant.id}']")
        assert section.count() == 1
        assert tenant.name in section.inner_text()
        last_run = world["store"].runs(tenant.id, limit=1)[0]
        assert f"#{last_run['id']}" in section.inner_text()
    assert page.locator("svg.chart").count() >= 2
    _shot(page, "status")
    page.click("section[data-tenant='harbor-wealth'] a[href*='/runs/']")
    assert "Per-record outcomes" in page.content()
    assert "@" in page.content() and "***@" in page.content()  # masked addresses only
    _shot(page, "run")
    assert errors == []
    page.close()


def test_model_card_page_renders_its_charts(browser, world):
    errors: list[str] = []
    page = _page(browser, errors)
    _login(page, world["url"])
    response = page.goto(world["url"] + "/firms/harbor-wealth/models/churn_risk")
    assert response.status == 200
    assert page.locator("#verdict").inner_text().startswith("Verdict:")
    assert "Insufficient" not in page.locator("#verdict").inner_text()
    assert page.locator("svg.chart").count() == 4  # calibration, gains, score distribution, top features
    assert "&lt;svg" not in page.content()  # charts are markup, never escaped text
    assert page.locator("svg.chart polyline").count() >= 2
    written = world["cfg"].model_dir / "harbor-wealth" / "churn_risk" / "card.html"
    assert "<svg" in written.read_text()  # `score --report` wrote the same page next to card.md
    _shot(page, "model-card")
    page.goto(world["url"] + "/firms/harbor-wealth/lift/churn_watch")
    assert "Minimum detectable effect" in page.content()
    _shot(page, "lift")
    assert errors == []
    page.close()


def _subscribed_member(world: dict[str, Any]) -> str:
    """A harbor contact whose email marketing is currently allowed."""
    from sync.run.gate import ConsentGate

    store, tenant = world["store"], world["cfg"].tenants[0]
    decisions = ConsentGate(store, tenant, None, None).decide_people(store.addresses(tenant.id))
    people = {c["contact_id"]: c for c in store.contacts(tenant.id)}
    return sorted(people[c]["email"] for c, d in decisions.items() if d[1] and people[c]["email"])[0]


def test_subscriber_unticks_marketing_email_and_it_reaches_the_ledger_and_the_vendors(browser, world):
    email = _subscribed_member(world)
    config = str(world["config"])
    out = CliRunner().invoke(
        cli, ["consent", "link", config, "--tenant", "harbor-wealth", email, "--base-url", world["url"]]
    )
    assert out.exit_code == 0, out.output
    url = out.stdout.strip().splitlines()[0]
    assert email not in url and email.split("@")[0] not in url
    errors: list[str] = []
    page = _page(browser, errors)
    assert page.goto(url).status == 200
    box = page.get_by_label("Marketing email")
    assert box.is_checked()
    _shot(page, "preferences")
    box.uncheck()
    page.click("button[value=save]")
    assert "We have stopped: email marketing" in page.locator("#saved").inner_text()
    assert not page.get_by_label("Marketing email").is_checked()
    _shot(page, "preferences-saved")
    assert errors == []

    status = CliRunner().invoke(
        cli, ["consent", "status", config, "--tenant", "harbor-wealth", "--email", email, "--json"]
    )
    rows = {r["purpose"]: r for r in json.loads(status.stdout)["purposes"]}
    assert rows["email_marketing"]["state"] == "withdrawn"
    assert rows["email_marketing"]["source"] == "preference_page"
    assert rows["profiling"]["state"] != "withdrawn"  # only what was unticked
    history = CliRunner().invoke(
        cli, ["consent", "history", config, "--tenant", "harbor-wealth", "--email", email, "--json"]
    )
    assert "privacy-notice-1" in history.stdout  # provenance: the notice shown

    service, box_mc = world["service"], world["boxes"][0]
    assert service.outbox.depth("harbor-wealth") > 0
    service.drain("harbor-wealth")
    assert service.outbox.depth("harbor-wealth") == 0
    import hashlib

    member = requests.get(
        f"{box_mc.mailchimp_url}/lists/{box_mc.mailchimp_list_id}/members/"
        f"{hashlib.md5(email.lower().encode()).hexdigest()}",
        auth=("t", box_mc.mailchimp_key),
        timeout=10,
    )
    assert member.json()["status"] == "unsubscribed"
    page.close()


def test_expired_or_tampered_links_are_refused(browser, world):
    email = _subscribed_member(world)
    tenant = world["cfg"].tenants[0]
    skey = world["service"].ledger.pseudonym(tenant.id, email)
    key = link_key(tenant, tokens.LINK)
    expired = tokens.sign(key, tokens.LINK, {"t": tenant.id, "s": skey}, timedelta(days=1),
                          now=datetime.now(UTC) - timedelta(days=2))
    good = tokens.sign(key, tokens.LINK, {"t": tenant.id, "s": skey}, timedelta(days=1))
    body, mac = good.split(".")
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    page = _page(browser)
    for token in (expired, tampered, good + "x"):
        response = page.goto(f"{world['url']}/p/{token}")
        assert response.status == 403
        assert "not valid or has expired" in page.content()
        assert "Marketing email" not in page.content()
    _shot(page, "link-refused")
    assert page.goto(f"{world['url']}/p/{good}").status == 200  # the untouched link still works
    page.close()
