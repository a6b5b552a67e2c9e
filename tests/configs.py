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
      - {{name: churn_risk, kind: churn, inactive_days: 60}}
    segments:
      - {{name: churn_watch, score: churn_risk, top_percent: 20}}
    holdout_percent: 10
    max_change_share: 0.9
"""


def sandbox_config(tmp_path: Path, sb, *, schedule: str | None = None, secret: str = "e2e-webhook-secret-0123") -> Path:
    """Write a one-tenant config (tenant ``firm``) using the sandbox's vendors and a SQLite store in tmp_path."""
    path = tmp_path / "segsync.yaml"
    path.write_text(SANDBOX_TENANT.format(
        db=tmp_path / "segsync.db", models=tmp_path / "models", schedule=f'schedule: "{schedule}"' if schedule else "",
        hs_token=sb.hubspot_token, hs_url=sb.hubspot_url, mc_key=sb.mailchimp_key, mc_list=sb.mailchimp_list_id,
        mc_url=sb.mailchimp_url, consent=consent_yaml(secret)))
    return path
