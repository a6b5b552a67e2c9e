"""A seeded, synthetic advisor book: people, two years of engagement, and the hidden truth.

The generator simulates week by week, vectorised over people with numpy. Each person has
fixed traits (email engagement, web habit, tier, AUM) and a latent *intent* that rises in
bursts and decays. Intent shows up as calculator/pricing page views and email clicks; the
weekly upgrade hazard is a function of that *observed* recent behaviour plus tier, AUM and a
hidden per-person effect. The truth after ``as_of`` uses the same hazard applied to the state
at ``as_of``, so a model trained on history can learn it, but the hidden effect and the
randomness of the draws keep the achievable AUC well below 1.

``signal`` (0 = off, the default book) plants a strong, learnable churn pattern so that a small
book can pass the scoring gate honestly: everyone gets a steady baseline of site visits, and now
and then a person "shops around" - a burst of pricing-page views in one session - and then goes
silent (no visits, opens, clicks, deposits or upgrades) for several weeks. The burst is recent
activity, so the naive "longest since last activity" rule ranks that person as safe, while a
model that sees ``high_intent_views_30d`` learns that they are about to lapse. The hidden truth
uses the same rule, so the pattern is real, not an artefact of the backtest.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from sandbox import _book_people as people_mod
from sandbox._book_people import Person
from sandbox._book_people import age_band as age_band  # re-exported: part of the book's API

WEEK = timedelta(weeks=1)
DEFAULT_AS_OF = datetime(2025, 6, 30, tzinfo=UTC)  # fixed so a seed always yields the same book
TIERS = ("core", "premier", "private")
HORIZON_WEEKS = 13  # ~90 days
CALC_WEEKS = 8  # hazard looks at calculator/pricing views in the last 8 weeks
CLICK_WEEKS = 13
INTENT_DECAY = 0.94  # weekly; slow enough that behaviour before a cutoff predicts the weeks after
# The planted churn signal (``signal`` > 0); each figure is scaled by ``signal``, except the lengths.
SIGNAL_VISIT_RATE = 0.6  # extra weekly sessions everyone makes while not away (so silence stands out)
SIGNAL_DEPART_RATE = 0.1  # weekly chance that a present person shops around and goes away
SIGNAL_AWAY_WEEKS = 12  # how long they stay silent: longer than the usual churn windows (21-60 days)
SIGNAL_PRICING_VIEWS = 5  # pricing-page views in the one session before they go away


@dataclass(slots=True)
class BookEvent:
    """One timestamped event: email_sent/open/click, page_view (url, session), deposit/upgrade (value)."""

    person_key: str
    type: str
    occurred_at: datetime
    value: float | None = None
    campaign_id: str | None = None
    url: str | None = None
    session_id: str | None = None


@dataclass(slots=True)
class Campaign:
    """A monthly email campaign."""

    id: str
    title: str
    sent_at: datetime


@dataclass(slots=True)
class Truth:
    """Hidden outcomes after ``as_of`` (tests and benchmarks only, never segsync)."""

    propensity: float
    upgraded_90d: bool
    churned_90d: bool
    deposit_value_365d: float


@dataclass
class Book:
    """A generated book: people, their events (time order), campaigns and the hidden truth per person key."""

    as_of: datetime
    people: list[Person]
    events: list[BookEvent]
    campaigns: list[Campaign]
    truth: dict[str, Truth]


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while millions of acyclic objects are created (halves the time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def weekly_upgrade_hazard(
    calc_recent: np.ndarray,
    pricing_recent: np.ndarray,
    clicks_recent: np.ndarray,
    tier: np.ndarray,
    log_aum_z: np.ndarray,
    hidden: np.ndarray,
) -> np.ndarray:
    """P(upgrade this week) from recent observed behaviour; shared by history and truth."""
    tier_effect = np.array([0.0, -0.4, -1.2])[tier]
    logit = (
        -5.9
        + 1.5 * np.log1p(calc_recent)
        + 1.0 * np.log1p(pricing_recent)
        + 0.7 * np.log1p(clicks_recent)
        + tier_effect
        + 0.35 * log_aum_z
        + hidden
    )
    return np.asarray(1.0 / (1.0 + np.exp(-logit)))


def generate_book(contacts: int = 2000, seed: int = 7, as_of: datetime | None = None, years: float = 2.0,
                  signal: float = 0.0) -> Book:
    """Generate a book of ``contacts`` people with ``years`` of history up to ``as_of``.

    ``signal`` > 0 plants the learnable churn pattern of the module docstring (1.0: strong enough
    that a 300-contact book's churn score passes the gate); 0 leaves the book exactly as before.
    Deterministic for a given (contacts, seed, as_of, years, signal).
    """
    if contacts < 1:
        raise ValueError("contacts must be at least 1")
    if not 0.0 <= signal <= 5.0:
        raise ValueError("signal must be between 0 (off) and 5")
    as_of = (as_of or DEFAULT_AS_OF).astimezone(UTC)
    rng = np.random.default_rng(seed)
    n = contacts
    weeks = max(int(round(years * 52)), HORIZON_WEEKS + 1)
    start = as_of - weeks * WEEK

    traits = people_mod.draw_traits(rng, n, as_of, start)
    sim = _simulate(rng, traits, weeks, signal)
    campaigns = [
        Campaign(id=f"{int(rng.integers(0, 16**10)):010x}", title=f"Market update {(start + w * WEEK):%B %Y}",
                 sent_at=start + w * WEEK + timedelta(days=1, hours=14))
        for w in sim["campaign_weeks"]
    ]
    with paused_gc():
        people = people_mod.build_people(rng, traits, sim["tier_final"], start, Person)
        keys = [p.key for p in people]
        events = _materialise_events(rng, sim, traits, keys, campaigns, start)
        truth = _truth(rng, sim, traits, keys, signal)
    return Book(as_of=as_of, people=people, events=events, campaigns=campaigns, truth=truth)


def _window(matrix: np.ndarray, t: int, width: int) -> np.ndarray:
    return np.asarray(matrix[:, max(0, t - width):t].sum(axis=1))


def _simulate(rng: np.random.Generator, tr: dict[str, Any], weeks: int, signal: float = 0.0) -> dict[str, Any]:
    """Week-by-week counts (people x weeks) of sends/opens/clicks/sessions/views/deposits/upgrades.

    With ``signal`` the extra random draws come after the default ones of each week, and only
    then, so a book without it is identical to one generated before the option existed.
    """
    n = tr["n"]
    shape = (n, weeks)
    sessions = np.zeros(shape, np.int16)
    calc = np.zeros(shape, np.int16)
    pricing = np.zeros(shape, np.int16)
    sent = np.zeros(shape, bool)
    opened = np.zeros(shape, bool)
    clicked = np.zeros(shape, bool)
    deposits = np.zeros(shape, np.int8)
    upgrades = np.zeros(shape, bool)
    tier = tr["tier0"].copy()
    intent = np.zeros(n)
    away = np.zeros(n, np.int16)  # weeks a person stays silent (the planted signal only)
    campaign_weeks = list(range(1, weeks, 4))  # roughly monthly
    is_campaign = np.zeros(weeks, bool)
    is_campaign[campaign_weeks] = True
    for t in range(weeks):
        alive = tr["created_week"] <= t
        spikes = rng.random(n) < 0.012
        intent = INTENT_DECAY * intent + spikes * rng.exponential(1.2, n)
        lam = tr["web"] * (0.08 + 0.3 * intent)
        s = rng.poisson(lam) * alive
        sessions[:, t] = s
        p_calc = np.clip(0.03 + 0.35 * intent, 0, 0.9)
        p_price = np.clip(0.02 + 0.2 * intent, 0, 0.9)
        calc[:, t] = rng.binomial(s, p_calc)
        pricing[:, t] = rng.binomial(s, p_price)
        if is_campaign[t]:
            receives = alive & tr["mailable"] & (tr["stop_week"] > t)
            op = receives & (rng.random(n) < tr["engage"] * (0.7 + 0.3 * np.minimum(intent, 1)))
            cl = op & (rng.random(n) < 0.12 + 0.3 * np.minimum(intent, 1.5))
            sent[:, t], opened[:, t], clicked[:, t] = receives, op, cl
        dep_rate = tr["dep_rate"] * (1 + 0.5 * np.minimum(intent, 2))
        deposits[:, t] = np.minimum(rng.poisson(dep_rate) * alive, 3)
        h = weekly_upgrade_hazard(_window(calc, t, CALC_WEEKS), _window(pricing, t, CALC_WEEKS),
                                  _window(clicked, t, CLICK_WEEKS),
                                  tier, tr["log_aum_z"], tr["hidden"])
        up = alive & (rng.random(n) < h)
        if signal > 0:
            up &= _plant_signal(rng, signal, t, alive, away, sessions, calc, pricing, opened, clicked, deposits)
        upgrades[:, t] = up
        tier = np.minimum(tier + up, 2)
    return {
        "weeks": weeks, "sessions": sessions, "calc": calc, "pricing": pricing, "sent": sent,
        "opened": opened, "clicked": clicked, "deposits": deposits, "upgrades": upgrades,
        "tier_final": tier, "intent": intent, "campaign_weeks": campaign_weeks, "away": away,
    }


def _plant_signal(rng: np.random.Generator, signal: float, t: int, alive: np.ndarray, away: np.ndarray,
                  sessions: np.ndarray, calc: np.ndarray, pricing: np.ndarray, opened: np.ndarray,
                  clicked: np.ndarray, deposits: np.ndarray) -> np.ndarray:
    """Week ``t`` of the planted churn pattern (see the module docstring); updates the matrices in place.

    Returns who may upgrade this week (nobody who is away).
    """
    n = alive.size
    gone = away > 0
    present = alive & ~gone
    sessions[:, t] += (rng.poisson(signal * SIGNAL_VISIT_RATE, n) * present).astype(np.int16)
    leaving = present & (rng.random(n) < signal * SIGNAL_DEPART_RATE)
    # One last session spent on the pricing page, then silence from next week on.
    sessions[leaving, t] += 1
    pricing[leaving, t] += SIGNAL_PRICING_VIEWS
    for matrix in (sessions, calc, pricing, opened, clicked, deposits):
        matrix[gone, t] = 0
    away[gone] -= 1
    away[leaving] = SIGNAL_AWAY_WEEKS
    return np.asarray(~gone)


EVENT_TYPES = ("deposit", "email_click", "email_open", "email_sent", "page_view", "upgrade")  # sorted: tie order
LANDING_PAGES = ("/", "/blog/market-outlook", "/blog/tax-season", "/blog/retirement-income", "/about")
CALCULATOR_URL, PRICING_URL = "/tools/retirement-calculator", "/pricing"


class _Columns:
    """Events as parallel numpy columns, turned into :class:`BookEvent` objects once, in time order."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, person: np.ndarray, kind: str, offsets: np.ndarray, *, value: np.ndarray | None = None,
            campaign: int = -1, url: np.ndarray | None = None, session: np.ndarray | None = None) -> None:
        size = person.size
        self.parts.append({
            "person": person.astype(np.int64), "type": np.full(size, EVENT_TYPES.index(kind), np.int8),
            "offset": offsets, "value": np.full(size, np.nan) if value is None else value.astype(float),
            "campaign": np.full(size, campaign, np.int32),
            "url": np.full(size, -1, np.int32) if url is None else url.astype(np.int32),
            "session": np.full(size, -1, np.int64) if session is None else session.astype(np.int64),
        })

    def build(self, keys: list[str], start: datetime, campaigns: list[Campaign], urls: list[str],
              session_ids: list[str]) -> list[BookEvent]:
        col = {name: np.concatenate([p[name] for p in self.parts]) for name in self.parts[0]}
        millis = np.round((start.timestamp() + col["offset"]) * 1000).astype(np.int64)
        order = np.lexsort((col["type"], col["person"], millis))  # (time, person key, type) as keys sort
        naive = millis[order].astype("datetime64[ms]").astype(object).tolist()
        at = [d.replace(tzinfo=UTC) for d in naive]

        def lookup(table: list[Any], codes: np.ndarray) -> list[Any]:
            """Map codes (-1 = None) through ``table`` in numpy, without a Python loop."""
            mapped: list[Any] = np.array([None, *table], dtype=object)[codes[order] + 1].tolist()
            return mapped

        values = col["value"][order].astype(object)
        values[np.isnan(col["value"][order])] = None
        events = list(map(BookEvent, lookup(keys, col["person"]), lookup(list(EVENT_TYPES), col["type"]), at,
                          values.tolist(), lookup([c.id for c in campaigns], col["campaign"]),
                          lookup(urls, col["url"]), lookup(session_ids, col["session"])))
        return events


def _materialise_events(rng: np.random.Generator, sim: dict[str, Any], tr: dict[str, Any], keys: list[str],
                        campaigns: list[Campaign], start: datetime) -> list[BookEvent]:
    """Turn the count matrices into timestamped events, sorted by time."""
    cols = _Columns()
    week_s = WEEK.total_seconds()

    # Email: sends at the campaign time, opens hours later, clicks minutes after the open.
    for n, (camp, w) in enumerate(zip(campaigns, sim["campaign_weeks"], strict=False)):
        sent_off = (camp.sent_at - start).total_seconds()
        for kind, mask, lag in (("email_sent", sim["sent"][:, w], 0.0), ("email_open", sim["opened"][:, w], 1.0),
                                ("email_click", sim["clicked"][:, w], 2.0)):
            idx = np.flatnonzero(mask)
            offs = sent_off + lag * rng.exponential(6 * 3600, idx.size) + (lag > 1) * 600
            cols.add(idx, kind, offs, campaign=n)

    # Web: each session gets a landing page; calculator/pricing views land in a random session that week.
    urls = [*LANDING_PAGES, CALCULATOR_URL, PRICING_URL]
    pi, wi = np.nonzero(sim["sessions"])
    counts = sim["sessions"][pi, wi].astype(np.int64)
    s_person = np.repeat(pi, counts)
    s_week = np.repeat(wi, counts)
    s_off = s_week * week_s + rng.uniform(0, week_s - 3600, s_person.size)
    first_of = np.concatenate(([0], np.cumsum(counts)[:-1]))
    landing = rng.choice(len(LANDING_PAGES), s_person.size, p=[0.4, 0.2, 0.15, 0.15, 0.1])
    session_ids = [f"s{seed_id:08x}" for seed_id in rng.permutation(s_person.size).tolist()]
    cols.add(s_person, "page_view", s_off, url=landing, session=np.arange(s_person.size))
    for matrix, url in ((sim["calc"], CALCULATOR_URL), (sim["pricing"], PRICING_URL)):
        vals = matrix[pi, wi].astype(np.int64)
        sess = np.repeat(first_of, vals) + (rng.random(int(vals.sum())) * np.repeat(counts, vals)).astype(np.int64)
        offs = s_off[sess] + rng.uniform(30, 900, sess.size)
        cols.add(s_person[sess], "page_view", offs, url=np.full(sess.size, urls.index(url)), session=sess)

    # Money: deposits sized by AUM, upgrades sized as a step up in managed assets.
    for kind, matrix, scale in (("deposit", sim["deposits"], 0.02), ("upgrade", sim["upgrades"], 0.15)):
        di, dw = np.nonzero(matrix)
        reps = matrix[di, dw].astype(np.int64)
        di, dw = np.repeat(di, reps), np.repeat(dw, reps)
        amounts = np.round(tr["aum"][di] * scale * rng.lognormal(0, 0.5, di.size), -1) + 500
        offs = dw * week_s + rng.uniform(0, week_s - 60, di.size)
        cols.add(di, kind, offs, value=amounts)
    return cols.build(keys, start, campaigns, urls, session_ids)


def _truth(rng: np.random.Generator, sim: dict[str, Any], tr: dict[str, Any], keys: list[str],
           signal: float = 0.0) -> dict[str, Truth]:
    """Outcomes after as_of from the same hazard, applied to the state at as_of.

    With ``signal``, the weeks a person is still away count as silent and the steady visits add
    to everyone's activity after that (the draws are the same as without it).
    """
    t = sim["weeks"]
    h = weekly_upgrade_hazard(_window(sim["calc"], t, CALC_WEEKS), _window(sim["pricing"], t, CALC_WEEKS),
                              _window(sim["clicked"], t, CLICK_WEEKS), sim["tier_final"], tr["log_aum_z"], tr["hidden"])
    propensity = 1.0 - (1.0 - h) ** HORIZON_WEEKS
    upgraded = rng.random(tr["n"]) < propensity
    # Intent decays geometrically, so the expected future session rate uses its mean over the horizon.
    d = INTENT_DECAY
    mean_intent = sim["intent"] * (d * (1 - d**HORIZON_WEEKS) / (1 - d) / HORIZON_WEEKS)
    weekly_activity = tr["web"] * (0.08 + 0.3 * mean_intent) + tr["mailable"] * tr["engage"] * 0.25
    active_weeks = np.full(tr["n"], float(HORIZON_WEEKS))
    if signal > 0:
        weekly_activity = weekly_activity + signal * SIGNAL_VISIT_RATE
        active_weeks = np.maximum(HORIZON_WEEKS - sim["away"], 0).astype(float)
    churned = rng.random(tr["n"]) < np.exp(-active_weeks * weekly_activity)
    n_dep = rng.poisson(tr["dep_rate"] * 52)
    dep_value = np.array([float(np.sum(np.round(a * 0.02 * rng.lognormal(0, 0.5, k), -1) + 500)) if k else 0.0
                          for a, k in zip(tr["aum"], n_dep, strict=False)])
    return {
        k: Truth(float(propensity[i]), bool(upgraded[i]), bool(churned[i]), float(dep_value[i]))
        for i, k in enumerate(keys)
    }
