"""The segsync configuration: YAML -> validated pydantic models, every error at once with its path.

Secrets are ``SecretStr`` (they print as ``**********``) and are registered with the HTTP
layer's redactor as soon as they are loaded, so they are masked in logs and errors too.
Unknown keys are errors: a typo must never be silently ignored.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from connectors import registry
from connectors.kit.http import register_secret
from core.errors import ConfigError
from sync.alerts import AlertsCfg
from sync.config.validate import (
    ConfigProblems,
    Problem,
    apply_defaults,
    located_problems,
    pydantic_problems,
    reference_checks,
    sort_problems,
    with_tenants,
)
from sync.config.yamlsource import Located, interpolate, load_yaml, load_yaml_file

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


def _block(role: registry.Role) -> Any:
    """The ``crm:``/``esp:`` block's type: the union of the registered vendors' config models."""
    models = tuple(p.config_model for p in registry.for_role(role))
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - a union built at run time


if TYPE_CHECKING:  # type checkers see the common base; validation uses the registered union
    CrmBlock = registry.VendorConfig
    EspBlock = registry.VendorConfig
else:
    CrmBlock = _block("crm")
    EspBlock = _block("esp")
CAMPAIGN_SENDS = ("email_sent", "email_bounce", "campaign_sent")  # done to a contact, never activity by them


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PurposeCfg(Strict):
    basis: Literal["consent", "legitimate_interest"]


class ConsentCfg(Strict):
    webhook_secret: SecretStr = Field(description="shared secret for the preference-center webhooks")
    # HMAC key for pseudonyms (and, derived, the ledger's chain). Default: a key generated at first
    # use in the key file (consent.keys), never the webhook secret, which may sit in a vendor's webhook URL.
    pseudonym_key: SecretStr | None = None
    keys_file: str | None = None  # default: $SEGSYNC_KEYS_FILE or ~/.config/segsync/keys.json
    purposes: dict[Literal["email_marketing", "profiling"], PurposeCfg]

    @field_validator("webhook_secret")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 16:
            raise ValueError("use at least 16 characters")
        return v

    @model_validator(mode="after")
    def _both_purposes(self) -> ConsentCfg:
        missing = {"email_marketing", "profiling"} - set(self.purposes)
        if missing:
            raise ValueError(f"purposes must declare a basis for {', '.join(sorted(missing))}")
        return self


class OutcomeCfg(Strict):
    event: str | None = None
    property: str | None = None
    equals: str | None = None

    @model_validator(mode="after")
    def _one(self) -> OutcomeCfg:
        if (self.event is None) == (self.property is None):
            raise ValueError("give exactly one of event or property")
        if self.property is not None and self.equals is None:
            raise ValueError("a property outcome needs equals")
        return self


class ScoreCfg(Strict):
    name: Slug
    kind: Literal["propensity", "churn", "ltv", "cluster"]
    outcome: OutcomeCfg | None = None
    horizon_days: int = Field(90, ge=7, le=730)
    inactive_days: int = Field(90, ge=7, le=730)
    clusters: int = Field(4, ge=2, le=12)
    # What counts as a transaction (ltv) and as activity (churn; lift). Campaign sends are never activity.
    transaction_types: list[str] = Field(default_factory=lambda: ["deposit"], min_length=1)
    activity_types: list[str] = Field(
        default_factory=lambda: ["email_open", "email_click", "page_view", "deposit", "upgrade"], min_length=1)

    @model_validator(mode="after")
    def _outcome(self) -> ScoreCfg:
        if self.kind == "propensity" and self.outcome is None:
            raise ValueError("a propensity score needs an outcome: {event: TYPE} or {property: NAME, equals: VALUE}")
        sends = [t for t in self.activity_types if t in CAMPAIGN_SENDS]
        if sends:
            raise ValueError(f"activity_types: {', '.join(sends)} is something segsync or the ESP did to the "
                             "contact, not activity by them; remove it")
        return self


class SegmentCfg(Strict):
    name: Slug
    score: Slug
    top_percent: float | None = Field(None, gt=0, le=100)
    min: float | None = None
    max: float | None = None
    cluster: str | None = None

    @model_validator(mode="after")
    def _rule(self) -> SegmentCfg:
        if self.top_percent is None and self.min is None and self.max is None and self.cluster is None:
            raise ValueError("give top_percent, min/max or cluster")
        # Contradictions: which rule would win is a guess, so say so instead of picking one.
        if self.top_percent is not None and (self.min is not None or self.max is not None):
            raise ValueError(
                "give either top_percent or min/max, not both (top_percent picks a share, min/max a score range)"
            )
        if self.cluster is not None and (self.top_percent is not None or self.min is not None or self.max is not None):
            raise ValueError("a cluster segment takes no top_percent or min/max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is above max ({self.max:g}): no score can match")
        return self


class PushCfg(Strict):
    crm_property: str = Field("segsync_segments", pattern=r"^[a-z][a-z0-9_]{0,99}$")
    crm_scores: bool = True
    esp_tags: bool = True
    esp_static_segments: bool = True
    tag_prefix: str = "segsync:"


class FeaturesCfg(Strict):
    numeric_properties: list[str] = []  # none declared (nor categorical): discovered from the stored properties
    categorical_properties: list[str] = []
    exclude_properties: list[str] = []  # never inputs, also when discovered
    sensitive_attributes: list[str] = []  # reported in fairness checks, never model inputs
    time_column: str | None = None  # a date property giving the book's time order (for property outcomes)
    household_value_property: str | None = None  # household value = the sum of members' values of this (e.g. aum)

    @model_validator(mode="after")
    def _sensitive_not_inputs(self) -> FeaturesCfg:
        inputs = {*self.numeric_properties, *self.categorical_properties}
        used = [a for a in self.sensitive_attributes if a in inputs]
        if used:
            raise ValueError(f"sensitive attribute(s) {', '.join(used)} listed as model inputs: a sensitive attribute "
                             "is measured for fairness only; remove it from numeric_properties/categorical_properties")
        return self


class PagesCfg(Strict):
    """The hosted pages of one firm: its colour, the notice a subscriber is shown, link lifetime, login."""

    colour: str = Field("#1f4e79", pattern=r"^#[0-9a-fA-F]{6}$")  # dark enough for white text (contrast)
    notice_version: str = Field("privacy-notice-1", min_length=1, max_length=64)
    notices: dict[Literal["email_marketing", "profiling"], str] = {}  # plain-language text per purpose
    link_days: int = Field(30, ge=1, le=365)  # how long a preference link stays valid
    status_token: SecretStr | None = Field(None, min_length=16)  # this firm's own login to its status page


class TenantCfg(Strict):
    id: Slug
    name: str | None = None
    timezone: str = "UTC"
    schedule: str | None = None
    crm: CrmBlock  # the union of the registered CRM config models
    esp: EspBlock | None = None
    consent: ConsentCfg
    scores: list[ScoreCfg] = []
    segments: list[SegmentCfg] = []
    features: FeaturesCfg = FeaturesCfg()
    holdout_percent: float = Field(10, ge=0, le=50)
    fairness: Literal["warn", "block"] = "warn"  # block: a four-fifths breach in a pushed segment stops its push
    max_change_share: float = Field(0.5, gt=0, le=1)  # plans changing more need --force
    push: PushCfg = PushCfg()
    pages: PagesCfg = PagesCfg()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as America/New_York)") from None
        return v

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(v, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a 5-field cron expression ({exc})") from None
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> TenantCfg:
        for what, names in (("score", [s.name for s in self.scores]), ("segment", [s.name for s in self.segments])):
            dupes = {n for n in names if names.count(n) > 1}
            if dupes:
                raise ValueError(f"{what} names must be unique: {', '.join(sorted(dupes))}")
        return self


class ServerCfg(Strict):
    listen: str = "127.0.0.1:8080"
    # The scheme and host the world calls (e.g. https://hooks.example.com) when segsync sits behind a
    # proxy: vendors sign the public URL, so webhook signatures are checked against it.
    public_url: str | None = Field(None, pattern=r"^https?://[^/\s]+$")
    # The login of the status pages (every firm); pages are refused while neither this nor a
    # tenant's pages.status_token is set. Use ${VAR}: it is a secret.
    admin_token: SecretStr | None = Field(None, min_length=16)
    log_format: Literal["text", "json"] = "text"  # json: one object per line, for log shippers (like --log-format)
    # uvicorn's line per request (paths masked): off unless asked for - it was 7 % of the server's CPU per
    # webhook request (bench/README.md, issue 21); /metrics counts the webhooks either way
    access_log: bool = False

    @field_validator("listen")
    @classmethod
    def _hostport(cls, v: str) -> str:
        m = re.fullmatch(r"(.+):(\d{1,5})", v)
        if not m or not 0 < int(m.group(2)) < 65536:
            raise ValueError("use host:port, e.g. 127.0.0.1:8080")
        return v

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class WorkersCfg(Strict):
    """The task engine (``segsync worker``; PostgreSQL stores only). The embedded ``segsync serve`` ignores it."""

    # Concurrent runs of tenants that share one vendor account (same CRM token, same email-platform API key):
    # they share its rate limit, so more at once only makes each slower.
    per_account: int = Field(1, ge=1, le=50)
    # A worker silent (no heartbeat) this long is dead: its job goes back to the queue for another worker.
    stalled_after_seconds: int = Field(60, ge=3, le=3600)
    # A schedule tick missed by at most this much (every worker was down) still runs once when one starts.
    catch_up_minutes: int = Field(10, ge=0, le=1440)


class Config(Strict):
    version: Literal[1]
    store: str = "sqlite:///segsync.db"
    model_dir: Path = Path(".segsync/models")
    server: ServerCfg = ServerCfg()
    alerts: AlertsCfg | None = None  # hosted mode: run failures, refused plans, opt-out backlog
    workers: WorkersCfg = WorkersCfg()  # the task engine: `segsync worker`, `segsync serve --workers external`
    tenants: list[TenantCfg] = Field(min_length=1)

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        # Checked here so `validate` catches it, not the first run: segsync's schema, locks and
        # migrations are written for these two databases only.
        scheme = value.split(":", 1)[0].split("+", 1)[0].lower()
        if scheme not in ("sqlite", "postgresql"):
            raise ValueError(f"store must be a sqlite:/// or postgresql+psycopg:// URL, not {scheme}://")
        return value

    @model_validator(mode="after")
    def _unique_tenants(self) -> Config:
        ids = [t.id for t in self.tenants]
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            raise ValueError(f"tenant ids must be unique: {', '.join(sorted(dupes))}")
        return self

    def tenant(self, tenant_id: str) -> TenantCfg:
        for t in self.tenants:
            if t.id == tenant_id:
                return t
        from sync.config.validate import suggest

        known = ", ".join(t.id for t in self.tenants)
        hint = suggest(tenant_id, [t.id for t in self.tenants])
        raise ConfigError(f"no tenant {tenant_id!r} in this config{hint} (tenants: {known})")


def parse_config(located: Located, env: Mapping[str, str] | None = None) -> Config:
    """Validate parsed YAML; raise one :class:`ConfigProblems` listing every problem, sorted by line."""
    if not isinstance(located.data, dict):
        raise ConfigError(f"{located.source}: the config must be a mapping (version, store, tenants, ...)")
    problems = located_problems(located) + apply_defaults(located)
    problems += [Problem(path, located.line_of(path), msg) for path, msg in interpolate(located, env)]
    problems += reference_checks(located)
    config: Config | None = None
    try:
        config = Config.model_validate(located.data)
    except ValidationError as exc:
        # One message per path: a missing ${VAR} explains the rest there.
        planned = {
            kind: f"{kind} is not supported yet (available: {', '.join(p.name for p in registry.for_role(role))})"
            for role in ("crm", "esp") for kind in registry.PLANNED[role]
        }
        flagged = {p.path for p in problems}
        problems += pydantic_problems(exc.errors(), located, Config, flagged, planned)
    if problems or config is None:
        raise ConfigProblems(located.source, sort_problems(with_tenants(located, problems), located.default_lines))
    alert_secrets = config.alerts.secrets() if config.alerts else []
    for secret in [*alert_secrets, *(s for t in config.tenants for s in _secrets(t))]:
        register_secret(secret)
    if config.server.admin_token is not None:
        register_secret(config.server.admin_token.get_secret_value())
    return config


def _secrets(tenant: TenantCfg) -> list[str]:
    values: list[SecretStr | None] = [
        tenant.consent.webhook_secret, tenant.consent.pseudonym_key, tenant.pages.status_token,
    ]
    found = [v.get_secret_value() for v in values if v is not None]
    for block in (tenant.crm, tenant.esp):
        if isinstance(block, registry.VendorConfig):
            found += block.secrets()  # each vendor block knows its own secrets
    return found


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file."""
    return parse_config(load_yaml_file(path), env)


def load_config_text(text: str, env: Mapping[str, str] | None = None, source: str = "<config>") -> Config:
    """Like :func:`load_config`, from a string (tests, the sandbox's generated config)."""
    return parse_config(load_yaml(text, source), env)
