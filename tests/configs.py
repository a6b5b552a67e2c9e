"""Config text shared by tests: the consent block every tenant needs, and a tenant wired to a sandbox."""

from __future__ import annotations

import textwrap
from pathlib import Path


def consent_yaml(secret: str, indent: int = 4, email_basis: str = "consent") -> str:
    """A tenant's ``consent:`` block: email marketing under ``email_basis``, profiling under legitimate interest."""
    block = f"""consent:
  webhook_secret: {secret}
  purposes:
    email_marketing: {{basis: {email_basis}}}
    profiling: {{basis: legitimate_interest}}"""
    return textwrap.indent(block, " " * indent).lstrip()


SANDBOX_TENANT = """version: 1
store: sqlite:///{db}
model_dir: {models}
tenants:
  - id: firm
    {schedule}
    crm: {{type: hubspot, access_token: {hs_token}, base_url: {hs_url}, plan: unlimited,
           web_events_lookback_days: 3650}}
    esp: {{type: mailchimp, api_key: {mc_key}, list_id: {mc_list}, base_url: {mc_url}}}
    {consent}
    scores:
      - {{name: churn_risk, kind: churn, inactive_days: {inactive_days}}}
    segments:
      - {{name: churn_watch, score: churn_risk, top_percent: 20}}
    holdout_percent: 10
    max_change_share: 0.9
"""


def sandbox_config(tmp_path: Path, sb, *, schedule: str | None = None, secret: str = "e2e-webhook-secret-0123",
                   inactive_days: int = 60) -> Path:
    """Write a one-tenant config (tenant ``firm``) using the sandbox's vendors and a SQLite store in tmp_path."""
    path = tmp_path / "segsync.yaml"
    path.write_text(SANDBOX_TENANT.format(inactive_days=inactive_days,
        db=tmp_path / "segsync.db", models=tmp_path / "models", schedule=f'schedule: "{schedule}"' if schedule else "",
        hs_token=sb.hubspot_token, hs_url=sb.hubspot_url, mc_key=sb.mailchimp_key, mc_list=sb.mailchimp_list_id,
        mc_url=sb.mailchimp_url, consent=consent_yaml(secret)))
    return path


def sandbox_tenant(tenant_id: str, sb, *, zone: str = "UTC", schedule: str | None = None, inactive_days: int = 60,
                   plan: str = "unlimited", secret: str = "e2e-webhook-secret-0123") -> str:
    """One ``tenants:`` entry wired to the sandbox (the tenant sandbox_config writes), for configs of many firms."""
    when = f'timezone: {zone}' + (f'\n    schedule: "{schedule}"' if schedule else "")
    text = SANDBOX_TENANT.format(inactive_days=inactive_days, db="unused", models="unused", schedule=when,
                                 hs_token=sb.hubspot_token, hs_url=sb.hubspot_url, mc_key=sb.mailchimp_key,
                                 mc_list=sb.mailchimp_list_id, mc_url=sb.mailchimp_url, consent=consent_yaml(secret))
    block = text.split("tenants:\n", 1)[1].replace("  - id: firm\n", f"  - id: {tenant_id}\n", 1)
    return block.replace("plan: unlimited,", f"plan: {plan},", 1)


# The smallest sandbox book whose segment passes the scoring gate honestly, with a margin: the planted
# churn signal (sandbox.book, ``signal``) on 300 contacts, churn as 21 days without activity. Measured
# (seeds 1-6): churn ROC AUC 0.90-0.95 against the naive rule's 0.62-0.71, the 95% interval of the gain
# 0.15 or more above zero. 275 contacts passed as well; at 250 the training window falls short of
# 100 positives and 100 negatives for some seeds.
SIGNAL_BOOK = {"contacts": 300, "signal": 1.0}
SIGNAL_INACTIVE_DAYS = 21


def signal_sandbox(make_sandbox, tmp_path: Path, seed: int = 5, **options) -> tuple[object, Path]:
    """A sandbox with the planted-signal book and its config (churn_watch is cut from a score the gate accepts)."""
    sb = make_sandbox(**SIGNAL_BOOK, seed=seed, **options)
    return sb, sandbox_config(tmp_path, sb, inactive_days=SIGNAL_INACTIVE_DAYS)
