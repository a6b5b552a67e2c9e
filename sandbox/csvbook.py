"""A synthetic advisor book written straight to CSV exports, streamed: any size in bounded memory.

``write_csv_book(folder, contacts=1_000_000)`` writes ``contacts.csv`` (id, email, names, tier, AUM,
state, lifecycle stage, created_at) and ``events.csv`` (contact_id, type, timestamp, value, url,
session_id) in chunks of 10,000 people, each chunk drawn with numpy from its own seeded generator,
so a book is the same for a given (contacts, events_per_contact, seed) and never exists in memory
as a whole (a million contacts: about 10 MB of Python objects at a time, whatever the size).

The outcome is learnable but not given away: every person has a hidden, persistent *intent*. It
raises their activity, the share of pricing and calculator page views, and the rate of ``upgrade``
events (value 1,000-20,000) over the two years before ``AS_OF``. A propensity model that sees
recent pricing views can learn who upgrades next; the draws keep it far from perfect. Events of a
person are in time order, people in id order (an export grouped by contact).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import numpy as np

AS_OF = datetime(2025, 6, 30, tzinfo=UTC)  # fixed: a seed always gives the same book
HISTORY_DAYS = 730
CHUNK = 10_000
TIERS = np.array(["core", "premier", "private"])
STATES = np.array(["NY", "NJ", "CT", "MA", "PA", "FL", "TX", "CA", "IL", "OH", "GA", "NC", "WA", "CO", "AZ"])
STAGES = np.array(["subscriber", "lead", "opportunity", "customer"])
FIRST = np.array(["Ann", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jon", "Kemi", "Luis"])
LAST = np.array(["Adams", "Baker", "Chen", "Diaz", "Evans", "Fox", "Garcia", "Hill", "Ito", "Jones", "Khan", "Lopez"])
DOMAINS = np.array(["example.com", "example.org", "mail.example.net", "advisor.example"])
BLOG = np.array(["/", "/blog/markets", "/blog/retirement", "/blog/taxes", "/about", "/team"])
EVENT_TYPES = np.array(["page_view", "email_open", "email_click", "deposit"])
CONTACT_HEADER = "id,email,firstname,lastname,tier,aum,state,lifecyclestage,created_at\n"
EVENT_HEADER = "contact_id,type,timestamp,value,url,session_id\n"


@dataclass(frozen=True)
class BookFiles:
    """Where the book was written and how big it is."""

    contacts_path: Path
    events_path: Path
    contacts: int
    events: int
    upgrades: int


def write_csv_book(folder: Path, contacts: int, events_per_contact: float = 8.0, seed: int = 7) -> BookFiles:
    """Write ``contacts.csv`` and ``events.csv`` of ``contacts`` people (about ``events_per_contact`` each)."""
    if contacts < 1:
        raise ValueError("contacts must be at least 1")
    if events_per_contact <= 0:
        raise ValueError("events_per_contact must be positive")
    folder.mkdir(parents=True, exist_ok=True)
    cpath, epath = folder / "contacts.csv", folder / "events.csv"
    total_events = upgrades = 0
    with cpath.open("w", encoding="utf-8", newline="") as cf, epath.open("w", encoding="utf-8", newline="") as ef:
        cf.write(CONTACT_HEADER)
        ef.write(EVENT_HEADER)
        for start in range(0, contacts, CHUNK):
            rng = np.random.default_rng([seed, start // CHUNK])
            n, u = _write_chunk(cf, ef, rng, start, min(CHUNK, contacts - start), events_per_contact)
            total_events += n
            upgrades += u
    return BookFiles(cpath, epath, contacts, total_events, upgrades)


def _iso(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds -> ``2025-03-01T14:30:00Z`` strings."""
    return np.char.add(np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s"), "Z")


def _write_chunk(cf: IO[str], ef: IO[str], rng: np.random.Generator, first: int, n: int,
                 per_contact: float) -> tuple[int, int]:
    """People ``first .. first + n - 1``: their contact rows, then their events. Returns (events, upgrades)."""
    end = int(AS_OF.timestamp())
    begin = end - HISTORY_DAYS * 86_400
    ids = np.char.add("c", np.char.zfill(np.arange(first, first + n).astype(str), 7))
    intent = rng.beta(0.6, 3.0, n)  # hidden; mean about 0.17
    tier = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    aum = np.round(rng.lognormal(12.5, 1.0, n), -2)
    created = rng.integers(begin - 4 * 365 * 86_400, end - 30 * 86_400, n)  # some joined in the window
    emails = np.char.add(np.char.add(np.char.add("person", np.arange(first, first + n).astype(str)), "@"),
                         DOMAINS[rng.integers(0, len(DOMAINS), n)])
    cols = [ids, emails, FIRST[rng.integers(0, len(FIRST), n)], LAST[rng.integers(0, len(LAST), n)], TIERS[tier],
            aum.astype(int).astype(str), STATES[rng.integers(0, len(STATES), n)],
            STAGES[rng.integers(0, len(STAGES), n)], _iso(created)]
    cf.write("".join(",".join(row) + "\n" for row in zip(*(c.tolist() for c in cols), strict=True)))

    # Activity: more of it, and more of it on pricing pages, with intent.
    counts = rng.poisson(per_contact * (0.6 + 1.6 * intent) / 0.8667)
    # Upgrades: a persistent hazard from intent and tier (private clients have little left to upgrade to).
    rate = 2.5 * intent ** 1.5 * np.array([1.0, 0.7, 0.3])[tier]
    ups = rng.poisson(rate * HISTORY_DAYS / 365)
    owner = np.repeat(np.arange(n), counts)
    up_owner = np.repeat(np.arange(n), ups)
    m, k = len(owner), len(up_owner)
    kind = rng.choice(4, m, p=[0.5, 0.3, 0.1, 0.1])
    pricing = rng.random(m) < 0.05 + 0.6 * intent[owner]
    urls = np.where(pricing, np.where(rng.random(m) < 0.5, "/pricing", "/calculator"),
                    BLOG[rng.integers(0, len(BLOG), m)])
    urls = np.where(kind == 0, urls, "")
    sessions = np.where(kind == 0, np.char.add("s", rng.integers(16**7, 16**8, m).astype(str)), "")
    values = np.where(kind == 3, np.round(rng.lognormal(8.0, 1.0, m), 2).astype(str), "")
    etype = EVENT_TYPES[kind]
    up_values = np.round(rng.uniform(1_000, 20_000, k), 2).astype(str)
    # Everyone's events, upgrades included, in (person, time) order.
    who = np.concatenate([owner, up_owner])
    since = np.maximum(created, begin)
    at = np.concatenate([rng.integers(since[owner], end), rng.integers(since[up_owner], end)])
    order = np.lexsort((at, who))
    rows = zip((ids[who[order]]).tolist(), np.concatenate([etype, np.full(k, "upgrade")])[order].tolist(),
               _iso(at[order]).tolist(), np.concatenate([values, up_values])[order].tolist(),
               np.concatenate([urls, np.full(k, "")])[order].tolist(),
               np.concatenate([sessions, np.full(k, "")])[order].tolist(), strict=True)
    ef.write("".join(",".join(r) + "\n" for r in rows))
    return m + k, k


BOOK_CONFIG = """version: 1
store: sqlite:///{folder}/segsync.db
model_dir: {folder}/models
tenants:
  - id: {tenant}
    crm: {{type: csv, contacts: {book}/contacts.csv, events: {book}/events.csv, created_column: created_at,
           output: {folder}/segments-out.csv}}
    consent:
      webhook_secret: csv-book-webhook-secret-0123
      purposes:
        email_marketing: {{basis: consent}}
        profiling: {{basis: legitimate_interest}}
    scores:
      - {{name: upgrade, kind: propensity, outcome: {{event: upgrade}}, horizon_days: 90}}
    segments:
      - {{name: likely_upgrade, score: upgrade, top_percent: 10}}
    holdout_percent: 10
"""


def write_book_config(folder: Path, book: Path, tenant: str = "firm") -> Path:
    """A one-firm config over the CSV files in ``book``, with its store, models and output in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "segsync.yaml"
    path.write_text(BOOK_CONFIG.format(folder=folder, book=book, tenant=tenant))
    return path
