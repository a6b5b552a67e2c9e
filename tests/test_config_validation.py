"""`segsync validate` like a compiler: every mistake in one pass, sorted, by tenant id, in plain words."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from core.errors import ConfigError
from sync.cli import cli
from sync.config import load_config_text

CONSENT = ("consent: {webhook_secret: 0123456789abcdef-secret, "
           "purposes: {email_marketing: {basis: consent}, profiling: {basis: legitimate_interest}}}")

# Ten planted mistakes; the comment on each line says which, and the test checks each is reported at its line.
TEN_MISTAKES = f"""version: 1
store: sqlite:///x.db
tenants:
  - id: harbor
    timezone: America/New_Yrok                      # 1 unknown time zone
    crm: {{type: hubspot, access_token: tok-secret-value-123, bsae_url: http://x}}   # 2 typo in a key
    {CONSENT}
    holdout_percent: 80                              # 3 out of range
    scores:
      - {{name: churn_risk, kind: churn, horizon_days: soon}}   # 4 not a number
    segments:
      - {{name: watch, score: churn_rsk, min: 0.6}}     # 5 unknown score reference
      - {{name: both, score: churn_risk, top_percent: 10, min: 0.5}}   # 6 contradictory rule
  - id: Bad Firm                                     # 7 id with forbidden characters
    crm: {{type: hubspt, access_token: tok-secret-value-456}}   # 8 unknown connector type
    {CONSENT}
  - id: harbor                                       # 9 duplicate tenant id
    crm: {{type: hubspot, access_token: tok-secret-value-789}}
    consent:
      webhook_secret: 0123456789abcdef-secret
      purposes: {{email_marketing: {{basis: concent}}, profiling: {{basis: legitimate_interest}}}}   # 10 bad basis
"""


def mistakes_lines(text: str) -> dict[int, int]:
    """Mistake number -> line, read from the '# N' comments."""
    return {int(m.group(1)): i for i, line in enumerate(text.splitlines(), 1) if (m := re.search(r"# (\d+) ", line))}


def test_ten_planted_mistakes_are_all_reported_in_one_pass_with_their_lines(tmp_path):
    path = tmp_path / "agency.yaml"
    path.write_text(TEN_MISTAKES)
    result = CliRunner().invoke(cli, ["validate", str(path)], obj={})
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line.strip() for line in result.output.splitlines()]
    reported = [line.removeprefix("- ") for line in lines if line.startswith(f"- {path}:")]
    at = mistakes_lines(TEN_MISTAKES)
    expected = {
        1: "tenant harbor: timezone: unknown time zone 'America/New_Yrok'",
        2: "tenant harbor: crm.bsae_url: unknown key (did you mean base_url?)",
        3: "tenant harbor: holdout_percent: must be at most 50 (got 80)",
        4: "tenant harbor: scores[0].horizon_days: must be a whole number (got 'soon')",
        5: "tenant harbor: segments[0].score: refers to score 'churn_rsk', which is not defined "
           "(did you mean churn_risk?)",
        6: "tenant harbor: segments[1]: give either top_percent or min/max, not both",
        7: "tenant Bad Firm: id: use lower-case letters, digits, '-' and '_'",
        8: "tenant Bad Firm: crm.type: unknown type 'hubspt' (did you mean hubspot?)",
        9: "tenant harbor: id: tenant id 'harbor' is already used (line 4)",
        10: "tenant harbor: consent.purposes.email_marketing.basis: 'concent' is not one of consent, "
            "legitimate_interest (did you mean consent?)",
    }
    assert len(reported) == 10, result.output
    for n, text in expected.items():
        assert any(r.startswith(f"{path}:{at[n]}: {text}") for r in reported), (n, text, result.output)
    lines = [int(r.split(":")[1]) for r in reported]
    assert lines == sorted(lines)  # in file order
    assert "pattern" not in result.output and "^[" not in result.output  # no raw regex or library wording
    assert "tenants[" not in result.output  # tenants by id, not index


def test_validate_json_gives_path_line_and_message(tmp_path):
    path = tmp_path / "agency.yaml"
    path.write_text(TEN_MISTAKES)
    result = CliRunner().invoke(cli, ["validate", str(path), "--json"], obj={})
    assert result.exit_code == 2
    doc = json.loads(result.output)
    assert doc["ok"] is False and len(doc["problems"]) == 10
    first = doc["problems"][0]
    assert first == {"path": "tenants[0].timezone", "line": 5, "tenant": "harbor",
                     "message": "unknown time zone 'America/New_Yrok' (use an IANA name such as America/New_York)"}
    dup = next(p for p in doc["problems"] if "already used" in p["message"])
    assert dup["path"] == "tenants[2].id" and dup["line"] == mistakes_lines(TEN_MISTAKES)[9]


def test_defaults_block_and_x_anchors_are_inherited_and_tenants_override():
    text = f"""version: 1
x-hubspot: &hubspot {{type: hubspot, access_token: tok-secret-value-123}}
defaults:
  timezone: Europe/London
  {CONSENT}
  push: {{esp_tags: false}}
tenants:
  - id: one
    crm: *hubspot
  - id: two
    timezone: America/Chicago
    crm:
      <<: *hubspot
      plan: professional
    push: {{crm_scores: false}}
"""
    cfg = load_config_text(text)
    one, two = cfg.tenants
    assert one.timezone == "Europe/London" and two.timezone == "America/Chicago"
    assert one.consent.purposes["profiling"].basis == "legitimate_interest"
    assert one.push.esp_tags is False and two.push.esp_tags is False and two.push.crm_scores is False
    assert one.crm.plan == "starter" and two.crm.plan == "professional"


def test_a_mistake_inherited_from_defaults_points_at_the_defaults_line():
    text = f"""version: 1
defaults:
  {CONSENT}
  holdout_percent: 99
tenants:
  - id: one
    crm: {{type: hubspot, access_token: tok-secret-value-123}}
  - id: two
    holdout_percent: 5
    crm: {{type: hubspot, access_token: tok-secret-value-123}}
  - id: three
    crm: {{type: hubspot, access_token: tok-secret-value-123}}
"""
    with pytest.raises(ConfigError) as exc:
        load_config_text(text)
    # said once, under the first tenant it breaks (three inherits it too; two sets its own)
    assert exc.value.problems == ["<config>:4: tenant one: holdout_percent: must be at most 50 (got 99)"]


@pytest.mark.parametrize(("segment", "message"), [
    ("{name: s, score: p, top_percent: 10, max: 0.9}",
     "give either top_percent or min/max, not both (top_percent picks a share, min/max a score range)"),
    ("{name: s, score: p, cluster: a, min: 0.1}", "a cluster segment takes no top_percent or min/max"),
    ("{name: s, score: p, min: 0.8, max: 0.2}", "min (0.8) is above max (0.2): no score can match"),
])
def test_contradictory_segment_rules_are_refused(segment, message):
    text = f"""version: 1
tenants:
  - id: one
    crm: {{type: hubspot, access_token: tok-secret-value-123}}
    {CONSENT}
    scores: [{{name: p, kind: churn}}]
    segments: [{segment}]
"""
    with pytest.raises(ConfigError) as exc:
        load_config_text(text)
    assert exc.value.problems == [f"<config>:7: tenant one: segments[0]: {message}"]
