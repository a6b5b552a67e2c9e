"""Operator signals for hosted mode: what ``/healthz`` and ``/metrics`` report, and alerts.

Alerts go to a Slack-compatible webhook (a JSON ``{"text": ...}`` POST; Slack, Mattermost, Rocket.Chat
and Teams workflows accept it) and/or by email over SMTP. They fire on:

- ``run_failed``      a scheduled run ended in error (a refused token, an unreachable vendor, a bug);
- ``records_failed``  a run finished but some records failed (they are retried next run);
- ``plan_refused``    the change guard refused a plan (``max_change_share``): nothing was pushed;
- ``outbox_backlog``  opt-outs wait too long or pile up before reaching the vendors.

The same alert for the same firm is not repeated within ``repeat_minutes``. Delivery never raises:
a broken alert channel is logged (redacted) and must not stop syncs or webhooks.

Config (YAML, top level)::

    alerts:
      webhook_url: ${SLACK_WEBHOOK_URL}          # a secret: Slack's URL is the credential
      email: {smtp_host: smtp.example.com, smtp_port: 587, username: alerts@example.com,
              password: "${SMTP_PASSWORD}", sender: alerts@example.com, to: [ops@example.com]}
      outbox_backlog: 100          # alert when more opt-out propagations than this are pending
      outbox_age_minutes: 60       # ... or when the oldest has waited longer than this
      repeat_minutes: 60
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa
import tenacity
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from connectors.kit.http import redact
from consent.outbox import PENDING
from consent.schema import consent_outbox
from core import times

log = logging.getLogger("segsync.alerts")

RUN_FAILED, RECORDS_FAILED, PLAN_REFUSED, OUTBOX_BACKLOG = (
    "run_failed",
    "records_failed",
    "plan_refused",
    "outbox_backlog",
)
FINISHED = ("ok", "failed_records")  # a run that pulled, planned and pushed (failed records are retried)
DELIVERY_TIMEOUT = 10.0  # seconds per attempt; an alert must not hold a scheduler thread for long


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmailAlertCfg(_Strict):
    """SMTP delivery (stdlib smtplib). STARTTLS unless ``starttls: false`` (a local relay)."""

    smtp_host: str = Field(min_length=1)
    smtp_port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    to: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _login_pair(self) -> EmailAlertCfg:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        bad = [a for a in self.to if "@" not in a]
        if bad:
            raise ValueError(f"not an email address: {', '.join(bad)}")
        return self


class AlertsCfg(_Strict):
    """Where alerts go and when an opt-out backlog is worth one."""

    webhook_url: SecretStr | None = None
    email: EmailAlertCfg | None = None
    outbox_backlog: int = Field(100, ge=1)
    outbox_age_minutes: float = Field(60, gt=0)
    repeat_minutes: float = Field(60, ge=0)

    @model_validator(mode="after")
    def _somewhere(self) -> AlertsCfg:
        if self.webhook_url is None and self.email is None:
            raise ValueError("give webhook_url, email or both (where should alerts go?)")
        url = self.webhook_url.get_secret_value() if self.webhook_url else ""
        if url and not url.startswith(("https://", "http://")):
            raise ValueError("webhook_url must be an http(s) URL")
        return self

    def secrets(self) -> list[str]:
        """Values the redactor must mask (a Slack webhook URL is itself the credential)."""
        values = [self.webhook_url, self.email.password if self.email else None]
        return [v.get_secret_value() for v in values if v is not None]


@dataclass(frozen=True)
class Alert:
    """One thing an operator should look at."""

    kind: str
    tenant: str
    message: str

    def text(self) -> str:
        return f"segsync [{self.kind}] firm {self.tenant}: {self.message}"


def alerts_for_run(report: Mapping[str, Any]) -> list[Alert]:
    """The alerts one run report calls for (none for an ok, dry or stopped run)."""
    tenant, status = str(report.get("tenant", "?")), report.get("status")
    run = f"run #{report['run_id']}" if report.get("run_id") else "a run"
    if status == "error":
        return [Alert(RUN_FAILED, tenant, f"{run} failed: {redact(report.get('error') or 'no error text')}")]
    if status == "refused":
        return [Alert(PLAN_REFUSED, tenant, f"{run} pushed nothing: {report.get('refused') or 'plan refused'}")]
    if status == "failed_records":
        failed = ((report.get("push") or {}).get("totals") or {}).get("failed", 0)
        return [
            Alert(RECORDS_FAILED, tenant, f"{run} finished with {failed} failed record(s); they are retried next run")
        ]
    return []


def outbox_alert(cfg: AlertsCfg, tenant: str, depth: int, oldest_age_s: float | None) -> Alert | None:
    """An alert when the tenant's opt-out propagations pile up or wait too long."""
    too_old = oldest_age_s is not None and oldest_age_s > cfg.outbox_age_minutes * 60
    if depth <= cfg.outbox_backlog and not too_old:
        return None
    age = f", the oldest waiting {oldest_age_s / 60:.0f} min" if oldest_age_s is not None else ""
    return Alert(OUTBOX_BACKLOG, tenant, f"{depth} opt-out propagation(s) not yet confirmed by the vendors{age}")


def oldest_pending_age(engine: sa.Engine, tenant: str, now: datetime | None = None) -> float | None:
    """Seconds the tenant's oldest pending outbox action has waited; None when nothing waits."""
    ob = consent_outbox.c
    query = sa.select(sa.func.min(ob.created_at)).where(ob.tenant_id == tenant, ob.status == PENDING)
    with engine.connect() as conn:
        oldest = conn.execute(query).scalar_one_or_none()
    if oldest is None:
        return None
    waited: float = ((now or times.now()) - times.as_utc(oldest)).total_seconds()
    return max(0.0, waited)


def run_history(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """From a tenant's runs (newest first): the last real run and the last that finished (dry runs excluded)."""
    real = [r for r in runs if not r.get("dry_run")]

    def brief(r: dict[str, Any] | None) -> dict[str, Any] | None:
        if r is None:
            return None
        return {"run_id": r["id"], "status": r["status"], "started_at": _iso(r["started_at"]),
                "finished_at": _iso(r.get("finished_at"))}

    return {"last_run": brief(real[0] if real else None),
            "last_success": brief(next((r for r in real if r["status"] in FINISHED), None))}


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    return (when.replace(tzinfo=UTC) if when.tzinfo is None else when).isoformat()


class _Transient(Exception):
    """A webhook answer worth another try (429, 5xx)."""


class DeliveryError(Exception):
    """An alert channel refused or did not answer; the message is fit for a log."""


class Alerter:
    """Delivers alerts to the configured channels, at most once per ``repeat_minutes`` per (kind, firm)."""

    def __init__(self, cfg: AlertsCfg | None, *, clock: Callable[[], float] = time.monotonic,
                 wait: tenacity.wait.wait_base | None = None) -> None:
        self.cfg = cfg
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._wait = wait or tenacity.wait_exponential(multiplier=0.5, max=5)
        self.sent: list[tuple[str, Alert]] = []  # (channel, alert) delivered, newest last: for /healthz and tests

    def notify(self, alert: Alert) -> list[str]:
        """Deliver ``alert``; return the channels that took it (empty when muted, unconfigured or all failed)."""
        if self.cfg is None:
            return []
        key, now = (alert.kind, alert.tenant), self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.cfg.repeat_minutes * 60:
                return []
            self._last[key] = now
        delivered = []
        for channel, send in (("webhook", self._post), ("email", self._mail)):
            if (channel == "webhook" and self.cfg.webhook_url is None) or (
                channel == "email" and self.cfg.email is None
            ):
                continue
            try:
                send(alert)
            except Exception as exc:
                why = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
                log.error("alert %s to %s not delivered: %s", alert.kind, channel, redact(why))
                continue
            delivered.append(channel)
            self.sent.append((channel, alert))
        if delivered:
            log.warning("alert %s for %s sent (%s)", alert.kind, alert.tenant, ", ".join(delivered))
        return delivered

    def _post(self, alert: Alert) -> None:
        assert self.cfg is not None and self.cfg.webhook_url is not None
        url = self.cfg.webhook_url.get_secret_value()

        def once() -> None:
            response = requests.post(url, json={"text": alert.text()}, timeout=DELIVERY_TIMEOUT)
            if response.status_code == 429 or response.status_code >= 500:
                raise _Transient(f"HTTP {response.status_code}")
            if response.status_code >= 400:
                raise DeliveryError(f"the alert webhook answered HTTP {response.status_code}: {response.text[:200]}")

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(3), wait=self._wait, reraise=True,
            retry=tenacity.retry_if_exception_type((_Transient, requests.ConnectionError, requests.Timeout)))
        try:
            retrying(once)
        except requests.RequestException as exc:
            # requests' messages quote the URL path, where Slack-style webhooks keep their token.
            raise DeliveryError(f"{type(exc).__name__}: no answer from {urlsplit(url).netloc}") from None

    def _mail(self, alert: Alert) -> None:
        email = self.cfg.email if self.cfg else None
        assert email is not None
        msg = EmailMessage()
        msg["Subject"] = f"[segsync] {alert.tenant}: {alert.kind.replace('_', ' ')}"
        msg["From"] = email.sender
        msg["To"] = ", ".join(email.to)
        msg.set_content(alert.text() + "\n")
        with smtplib.SMTP(email.smtp_host, email.smtp_port, timeout=DELIVERY_TIMEOUT) as smtp:
            if email.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if email.username and email.password:
                smtp.login(email.username, email.password.get_secret_value())
            smtp.send_message(msg)
