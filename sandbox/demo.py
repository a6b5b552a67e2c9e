"""``segsync demo``: the whole product on one machine, against the sandbox vendors, with SQLite.

1. Three advisory firms (tenants), two on a simulated HubSpot portal and one on a simulated Wealthbox
   workspace, each with its own Mailchimp audience seeded with a synthetic book, configured in one YAML
   file (written to the output folder).
2. ``segsync serve``'s web app runs on a loopback port, and the first firm's Mailchimp audience
   has a list webhook pointing at it - as a real account would.
3. A full sync of every firm. While the first firm's tags are being pushed, a subscriber who is in
   a segment unsubscribes in Mailchimp: Mailchimp's webhook reaches segsync, the ledger records the
   withdrawal, the remaining batches skip that person, and the outbox opts them out in HubSpot.
4. The next sync sends only the knock-on of that opt-out (a segment boundary may move by one person);
   the one after, with nothing changed, makes zero write calls (counted by the sandbox).
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import requests
import uvicorn
from rich.console import Console

from sync.cli.report import render_run, summary_table
from sync.config.models import TenantCfg, load_config
from sync.run.gate import ConsentGate
from sync.run.pipeline import RunOptions, TenantRun, exit_code
from sync.run.plan import CRM, TAGS
from sync.store import Store, open_store

MARKER = ".segsync-demo"
console = Console(highlight=False)

TENANT_TEMPLATE = """\
  - id: {id}
    name: {name}
    timezone: {tz}
    schedule: "{cron}"
{crm}    esp:
      type: mailchimp
      api_key: {mc_key}
      list_id: {mc_list}
      base_url: {mc_url}
    consent:
      webhook_secret: {secret}
      purposes:
        email_marketing: {{basis: consent}}
        profiling: {{basis: legitimate_interest}}
{scores}    holdout_percent: 10
    push: {{crm_property: segsync_segments, crm_scores: true, esp_tags: true, esp_static_segments: true}}
"""


HUBSPOT_CRM = """\
    crm:
      type: hubspot
      access_token: {hs_token}
      base_url: {hs_url}
      plan: professional
      web_events_lookback_days: 3650
"""
HUBSPOT_SCORES = """\
    scores:
      - {name: upgrade_propensity, kind: propensity, outcome: {event: upgrade}, horizon_days: 90}
      - {name: churn_risk, kind: churn, inactive_days: 90}
      - {name: ltv_12m, kind: ltv, horizon_days: 365}
    segments:
      - {name: high_upgrade_intent, score: upgrade_propensity, top_percent: 10}
      - {name: churn_watch, score: churn_risk, top_percent: 15}
    features: {numeric_properties: [aum], sensitive_attributes: [age]}  # account_tier moves with upgrades: a leak
"""
TITLES = {"hubspot": "HubSpot", "wealthbox": "Wealthbox", "mailchimp": "Mailchimp"}
FIRMS = (  # (id, name, time zone, cron, CRM)
    ("harbor-wealth", "Harbor Wealth Partners", "America/New_York", "0 */6 * * *", "hubspot"),
    ("summit-advisors", "Summit Advisors", "America/Chicago", "30 5 * * *", "hubspot"),
    ("cedar-planning", "Cedar Planning Group", "America/Denver", "15 */8 * * *", "wealthbox"),
)


def sandbox_banner(sb: Any) -> str:
    """Where `segsync sandbox` serves each simulated vendor."""
    return (f"HubSpot   {sb.hubspot_url}\nMailchimp {sb.mailchimp_url}\n"
            f"Wealthbox {sb.wealthbox.url}  (same book; custom fields for the scores exist)\n"
            f"Redtail   {sb.redtail.url}  (same book)\n"
            "# a firm on Wealthbox: this crm: block instead (its events are meeting and opportunity_won)\n"
            + str(sb.crm_yaml("wealthbox"))
            + "# a firm on Redtail: this crm: block instead\n" + str(sb.crm_yaml("redtail")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(out: Path, sandboxes: list[Any]) -> Path:
    """The demo's config for the first ``len(sandboxes)`` firms of :data:`FIRMS`, one sandbox each."""
    body = (
        "version: 1\nstore: sqlite:///{store}\nmodel_dir: {models}\nserver: {{listen: 127.0.0.1:8080}}\ntenants:\n"
    ).format(
        store=(out / "segsync.db").resolve(), models=(out / "models").resolve()
    )
    for (tid, name, tz, cron, crm), sb in zip(FIRMS[: len(sandboxes)], sandboxes, strict=True):
        body += TENANT_TEMPLATE.format(
            id=tid, name=name, tz=tz, cron=cron, mc_key=sb.mailchimp_key, mc_list=sb.mailchimp_list_id,
            mc_url=sb.mailchimp_url, secret=f"demo-webhook-secret-{tid}",
            crm=HUBSPOT_CRM.format(hs_token=sb.hubspot_token, hs_url=sb.hubspot_url) if crm == "hubspot"
            else sb.crm_yaml("wealthbox"),
            scores=HUBSPOT_SCORES if crm == "hubspot" else sb.scores_yaml("wealthbox"),
        )
    path = out / "segsync.yaml"
    path.write_text(body)
    return path


class WebServer:
    """The hosted app (webhook, /healthz, /metrics) on a loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.port = _free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> WebServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the demo web server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _mask(email: str) -> str:
    name, _, domain = email.partition("@")
    return f"{name[:2]}***@{domain}"


class MidRunOptOut:
    """During the first ESP push of a tenant, one segment member unsubscribes in Mailchimp."""

    def __init__(self, store: Store, tenant: TenantCfg, sb: Any) -> None:
        self.store, self.tenant, self.tenant_id, self.sb = store, tenant, tenant.id, sb
        self.email: str | None = None
        self.delivered = False

    def __call__(self, task: str, n: int, total: int | None) -> None:
        # Once the first CRM batch is confirmed, the ESP push is still ahead: the opt-out lands mid-run.
        if self.email is not None or not task.startswith(f"push {CRM}"):
            return
        members = {r["contact_id"] for r in self.store.segment_members(self.tenant_id) if not r["holdout"]}
        people = {c["contact_id"]: c for c in self.store.contacts(self.tenant_id)}
        sent = self.store.last_sent(self.tenant_id, TAGS)
        candidates = sorted(
            people[c]["email"] for c in members
            if c in people and c not in sent and people[c]["email"] and people[c]["esp_status"] == "subscribed"
        )
        cid_of = {people[c]["email"]: c for c in members if c in people}
        allowed = ConsentGate(self.store, self.tenant, None, None).decide_people(
            self.store.addresses(self.tenant_id, [cid_of[e] for e in candidates]))
        waiting = [e for e in candidates if allowed.get(cid_of[e], (False, False))[1]]
        if not waiting:
            return
        self.email = waiting[len(waiting) // 2]
        # The subscriber clicks "unsubscribe" in a Mailchimp email: Mailchimp changes the status and
        # posts the list webhook to segsync, which answers once the withdrawal is in the ledger.
        self.sb.mailchimp.unsubscribe(self.email)
        self.delivered = self.sb.mailchimp.wait_for_webhooks(timeout=10)


def _register_webhook(base_url: str, harbor: TenantCfg, sb: Any) -> int:
    """Register segsync's Mailchimp webhook on the sandbox audience; the HTTP status of the answer."""
    hook_url = f"{base_url}/hooks/{harbor.id}/mailchimp/{harbor.consent.webhook_secret.get_secret_value()}"
    r = requests.post(
        f"{sb.mailchimp_url}/lists/{sb.mailchimp_list_id}/webhooks",
        json={
            "url": hook_url,
            "events": {"unsubscribe": True, "cleaned": True, "upemail": True, "profile": True},
            # not "api": segsync's own API calls must not echo back as webhooks
            "sources": {"user": True, "admin": True, "api": False},
        },
        auth=("demo", sb.mailchimp_key),
        timeout=10,
    )
    return r.status_code


def run_demo(out: Path, contacts: int, *, as_json: bool = False) -> int:
    from sandbox import start_sandbox
    from sync.serve import Service

    if out.exists():
        if not (out / MARKER).exists() and any(out.iterdir()):
            console.print(f"[red]error:[/] {out} exists and is not a segsync demo folder; choose another --out")
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("created by segsync demo; safe to delete\n")

    started = time.monotonic()
    console.rule("[bold]segsync demo")
    third = max(contacts // 2, 300)
    console.print(f"Generating three synthetic advisor books ({contacts:,}, {contacts // 2:,} and {third:,} contacts) "
                  "and starting the sandbox HubSpot (two firms), Wealthbox (the third) and Mailchimp for each...")
    sandboxes = [start_sandbox(contacts=contacts, seed=7, hubspot_plan="professional"),
                 start_sandbox(contacts=max(contacts // 2, 300), seed=8, hubspot_plan="professional"),
                 start_sandbox(contacts=third, seed=9)]
    sandboxes[2].wealthbox  # noqa: B018 - started (and its score fields made) before the config names it
    reports: list[dict[str, Any]] = []
    try:
        config = write_config(out, sandboxes)
        cfg = load_config(config)
        console.print(f"Config: {config} ({len(cfg.tenants)} tenants); store: SQLite {out / 'segsync.db'}")
        store = open_store(cfg.store)
        service = Service(cfg, config.parent, store=store)
        with WebServer(service.app(run_scheduler=False)) as web:
            harbor, sb = cfg.tenants[0], sandboxes[0]
            status = _register_webhook(web.url, harbor, sb)
            console.print(
                f"Preference-center webhook at {web.url}/hooks/...; Mailchimp list webhook registered ({status})."
            )

            console.rule("[bold]Run 1: full sync of every firm")
            optout = MidRunOptOut(store, harbor, sb)
            for tenant in cfg.tenants:
                crm, esp = fresh_connectors(tenant)
                opts = RunOptions(progress=optout if tenant.id == harbor.id else None)
                with console.status(f"syncing {tenant.id}..."):
                    report = TenantRun(cfg, tenant, store, crm, esp, opts).run()
                reports.append(report)
                _print(report, as_json)
            if not as_json:
                console.print(summary_table(reports))  # every multi-firm run ends with one line per firm
            if optout.email:
                _explain_optout(store, harbor.id, optout, sb)

            for number, title in (
                (2, "the next sync: only what the opt-out changed"),
                (3, "again, with nothing changed"),
            ):
                console.rule(f"[bold]Run {number}: {title}")
                for tenant, box in zip(cfg.tenants, sandboxes, strict=True):
                    before = {v: len(_writes(box, v)) for v in (tenant.crm.type, "mailchimp")}
                    crm, esp = fresh_connectors(tenant)  # per run: its API counts are its own
                    with console.status(f"syncing {tenant.id}..."):
                        report = TenantRun(cfg, tenant, store, crm, esp, RunOptions()).run()
                    writes = {v: len(_writes(box, v)) - before[v] for v in before}
                    report["sandbox_write_calls"] = writes
                    reports.append(report)
                    console.print(f"{tenant.id}: {report['status']} in {report['duration_s']} s, "
                                  f"{report['plan']['total_changes']} changes planned; write calls made: "
                                  + ", ".join(f"{TITLES.get(v, v)} {n}" for v, n in writes.items()))
        store.close()
    finally:
        for box in sandboxes:
            box.stop()
    console.rule()
    console.print(
        f"Demo finished in {time.monotonic() - started:.0f} s. Try next:\n"
        f"  .venv/bin/segsync runs {config}\n"
        f"  .venv/bin/segsync consent verify {config}\n"
        f"  .venv/bin/segsync score {config} --tenant harbor-wealth --report   (needs no sandbox: uses the store)"
    )
    (out / "reports.json").write_text(json.dumps(reports, indent=2, default=str))
    return exit_code(reports)


def fresh_connectors(tenant: TenantCfg) -> tuple[Any, Any]:
    from sync.config.wiring import build_crm, build_esp

    return build_crm(tenant), build_esp(tenant)


def _writes(box: Any, vendor: str) -> list[Any]:
    """Calls that change vendor data (HubSpot's search and batch read are POSTs that only read)."""
    return [c for c in box.calls.writes(vendor) if not c.path.endswith(("/search", "/batch/read"))]


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(report, default=str))
    else:
        console.print(render_run(report))


def _explain_optout(store: Store, tenant_id: str, optout: MidRunOptOut, sb: Any) -> None:
    email = optout.email or ""
    cid = store.contact_by_email(tenant_id, email)
    tagged = cid in store.last_sent(tenant_id, TAGS) if cid else False
    primary = next((c["email"] for c in store.contacts(tenant_id) if c["contact_id"] == cid), None) or email
    hubspot = "?"
    r = requests.get(f"{sb.hubspot_url}/communication-preferences/v3/status/email/{primary}",
                     headers={"Authorization": f"Bearer {sb.hubspot_token}"}, timeout=10)
    if r.ok:
        statuses = r.json().get("subscriptionStatuses") or []
        off = sum(1 for s in statuses if s.get("status") == "NOT_SUBSCRIBED")
        hubspot = f"unsubscribed from {off} of {len(statuses)} email subscription types"
    console.print(
        f"[bold]Mid-run opt-out:[/] {_mask(email)} unsubscribed in Mailchimp while the push was running "
        f"({'webhook delivered' if optout.delivered else 'webhook NOT delivered'}). "
        "The ledger recorded the withdrawal, "
        f"the rest of the push {'still had them tagged (batch in flight)' if tagged else 'skipped them'}, and the "
        f"outbox propagated it: in HubSpot they are now {hubspot}."
    )
