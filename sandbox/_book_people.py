"""Who is in the synthetic book: identities, traits, and where each person is known (CRM, ESP).

Kept apart from :mod:`sandbox.book` so the behaviour simulation there stays readable. The quirks
that make syncing hard are planted here on purpose: unsubscribes with reasons, cleaned
addresses, people only in one system, case-variant addresses, an email change and a CRM merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np


@dataclass(slots=True)
class Person:
    """One person of the book and how each system knows them (``in_crm``/``in_esp``, emails, statuses)."""

    key: str
    email: str
    first_name: str
    last_name: str
    household_id: str
    age: int
    account_tier: str
    aum: float
    created_at: datetime
    in_crm: bool
    in_esp: bool
    esp_email: str | None
    esp_status: str
    esp_opt_in_at: datetime | None
    esp_opt_in_ip: str | None
    esp_unsubscribe_reason: str | None
    crm_email_optout: bool
    lifecyclestage: str
    previous_email: str | None
    merged_into: str | None
    esp_left_at: datetime | None = None  # when an unsubscribed/cleaned member left the list

    @property
    def age_band(self) -> str:
        """The usual marketing age band ("18-34" ... "75+")."""
        return age_band(self.age)


def age_band(age: int) -> str:
    """Bucket an age the way advisors' marketing reports do."""
    for upper, label in ((35, "18-34"), (45, "35-44"), (55, "45-54"), (65, "55-64"), (75, "65-74")):
        if age < upper:
            return label
    return "75+"


FIRST = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Daniel",
    "Lisa",
    "Matthew",
    "Nancy",
    "Anthony",
    "Sandra",
    "Mark",
    "Ashley",
    "Paul",
    "Emily",
    "Steven",
    "Donna",
    "Andrew",
    "Michelle",
    "Kenneth",
    "Carol",
    "Joshua",
    "Amanda",
    "Kevin",
    "Melissa",
    "Brian",
    "Deborah",
    "George",
    "Stephanie",
    "Omar",
    "Priya",
    "Wei",
    "Mateo",
    "Aisha",
    "Hiroshi",
    "Sofia",
    "Liam",
    "Chloe",
    "Noah",
    "Grace",
]
LAST = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Patel",
    "Kim",
    "Chen",
    "Okafor",
    "Novak",
]
DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "aol.com", "comcast.net", "proton.me")
REASONS = ("N/A (Unsubscribed by admin)", "I no longer want to receive these emails",
           "I never signed up for this mailing list", "The emails are inappropriate", "The emails are spam",
           "Other")
ESP_STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
ESP_SHARES = (0.86, 0.05, 0.01, 0.02, 0.06)


def draw_traits(rng: np.random.Generator, n: int, as_of: datetime, start: datetime) -> dict[str, Any]:
    """Draw everything per person that the week-by-week simulation needs, as numpy arrays."""
    weeks = int(round((as_of - start) / timedelta(weeks=1)))
    tier0 = rng.choice(3, n, p=[0.7, 0.22, 0.08])
    aum = np.round(np.exp(rng.normal(np.array([11.3, 12.6, 14.0])[tier0], 0.6)), -2)
    log_aum = np.log(aum)
    # A quarter of the book joined during the history window; the rest existed before it.
    created_week = np.where(rng.random(n) < 0.25, rng.integers(0, weeks, n), -rng.integers(1, 520, n))
    in_esp = rng.random(n) >= 0.02
    in_crm = rng.random(n) >= 0.02
    in_crm[~in_esp] = True  # nobody is in neither system
    status = np.where(in_esp, rng.choice(5, n, p=ESP_SHARES), 1)
    if n >= 20:  # guarantee every status appears even in small books
        status[np.flatnonzero(in_esp)[:5]] = np.arange(5)
    # Unsubscribed and cleaned people stop receiving at a point in time.
    leaves = in_esp & ((status == 1) | (status == 2))
    joined = np.maximum(created_week, 0)
    # ...before as_of (their status says they already left), at least a week after joining.
    stop_week = np.where(leaves, np.minimum(joined + rng.integers(1, weeks, n), np.maximum(weeks - 1, joined + 1)),
                         weeks + 1)
    return {
        "n": n, "weeks": weeks, "tier0": tier0, "aum": aum,
        "log_aum_z": (log_aum - log_aum.mean()) / (log_aum.std() or 1.0),
        "created_week": created_week, "web": rng.gamma(1.2, 1.0, n), "engage": rng.beta(2, 4, n),
        "hidden": rng.normal(0, 0.5, n), "dep_rate": 0.01 + 0.02 * tier0,
        "in_esp": in_esp, "in_crm": in_crm, "status": status,
        "mailable": in_esp & ((status == 0) | leaves), "stop_week": stop_week,
        "age": np.clip(np.round(rng.normal(56, 13, n)), 22, 95).astype(int),
    }


def build_people(rng: np.random.Generator, tr: dict[str, Any], tier_final: np.ndarray, start: datetime,
                 person_cls: type[Person]) -> list[Person]:
    """Create the Person records, planting email changes, merges and case variants.

    ``person_cls`` is the record class to build (:class:`Person`).
    """

    n = tr["n"]
    first = rng.choice(FIRST, n)
    last = rng.choice(LAST, n)
    # Households: runs of 1-3 consecutive people share an id and a surname.
    hh_sizes = rng.choice([1, 2, 3], n, p=[0.55, 0.35, 0.10])
    hh_index = np.repeat(np.arange(n), hh_sizes)[:n]
    last = last[hh_index]
    domain = rng.choice(DOMAINS, n)
    created_off = tr["created_week"] * 7 * 86400 + rng.uniform(0, 7 * 86400, n)
    opt_delay = rng.uniform(60, 3 * 86400, n)
    # Leaving happens in the days before the first campaign they no longer receive.
    left_off = tr["stop_week"] * 7 * 86400 - rng.uniform(0, 3 * 86400, n)
    as_of = start + timedelta(weeks=tr["weeks"])
    ips = rng.integers(1, 255, (n, 4))
    reasons = rng.choice(REASONS, n, p=[0.1, 0.5, 0.1, 0.05, 0.1, 0.15])
    case_variant = tr["in_esp"] & (rng.random(n) < 0.01)
    mixed_crm = rng.random(n) < 0.005
    if n >= 20:  # even a small book has one of each quirk
        case_variant[np.flatnonzero(tr["in_esp"])[5]] = True
        mixed_crm[np.flatnonzero(tr["in_crm"])[6]] = True
    optout = (rng.random(n) < 0.01) | ((tr["status"] == 1) & (rng.random(n) < 0.3))
    stage = np.where(rng.random(n) < 0.08, 1, 2)
    stage[tr["created_week"] > tr["weeks"] - 13] = 0
    changed = set(_pick(rng, n, 0.005, exclude=set()))
    losers = _pick(rng, n, 0.005, exclude=changed)
    base = start
    people: list[Person] = []
    for i in range(n):
        key = f"p{i + 1:06d}"
        local = f"{first[i]}.{last[i]}{i + 1}".lower()
        email = f"{local}@{domain[i]}"
        crm_email = email if not mixed_crm[i] else f"{first[i]}.{last[i]}{i + 1}@{domain[i]}"
        st = ESP_STATUSES[tr["status"][i]] if tr["in_esp"][i] else "unsubscribed"
        opted = st in ("subscribed", "unsubscribed", "cleaned")
        created = base + timedelta(seconds=float(created_off[i]))
        opt_in_at = created + timedelta(seconds=float(opt_delay[i])) if opted else None
        left_at = None
        if st in ("unsubscribed", "cleaned") and tr["in_esp"][i]:
            earliest = (opt_in_at or created) + timedelta(hours=1)
            left_at = min(max(base + timedelta(seconds=float(left_off[i])), earliest), as_of - timedelta(minutes=1))
        esp_email = (_variant_case(email) if case_variant[i] else email) if tr["in_esp"][i] else None
        previous = None
        if i in changed:
            previous = f"{first[i][0]}{last[i]}.work{i + 1}@example-corp.com".lower()
            if esp_email is not None and (i % 2 == 0 or i == min(changed)):
                esp_email = previous  # the ESP never heard about the change
        people.append(person_cls(
            key=key, email=crm_email, first_name=str(first[i]), last_name=str(last[i]),
            household_id=f"h{hh_index[i] + 1:06d}", age=int(tr["age"][i]),
            account_tier=("core", "premier", "private")[tier_final[i]], aum=float(tr["aum"][i]),
            created_at=created, in_crm=bool(tr["in_crm"][i]), in_esp=bool(tr["in_esp"][i]),
            esp_email=esp_email, esp_status=st,
            esp_opt_in_at=opt_in_at,
            esp_opt_in_ip=".".join(map(str, ips[i])) if opted else None,
            esp_unsubscribe_reason=str(reasons[i]) if st == "unsubscribed" else None,
            crm_email_optout=bool(optout[i]), lifecyclestage=("lead", "opportunity", "customer")[stage[i]],
            previous_email=previous, merged_into=None, esp_left_at=left_at,
        ))
    _plant_merges(people, losers)
    return people


def _variant_case(email: str) -> str:
    local, _, domain = email.partition("@")
    return local[:1].upper() + local[1:] + "@" + domain[:1].upper() + domain[1:]


def _pick(rng: np.random.Generator, n: int, share: float, exclude: set[int]) -> list[int]:
    """At least one index (when n allows), about ``share`` of n, avoiding ``exclude``."""
    want = max(1, int(n * share)) if n >= 4 else 0
    pool = [i for i in rng.permutation(n)[: want * 3 + 4].tolist() if i not in exclude]
    return sorted(pool[:want])


def _plant_merges(people: list[Person], losers: list[int]) -> None:
    """Make each loser a CRM duplicate of its household neighbour (or the next person)."""
    taken = set(losers)
    for i in losers:
        j = i - 1 if i > 0 else i + 1
        while j in taken and 0 <= j < len(people):
            j += 1
        if not 0 <= j < len(people) or j == i:
            continue
        loser, survivor = people[i], people[j]
        survivor.in_crm = True
        loser.in_crm = True
        loser.merged_into = survivor.key
        loser.household_id = survivor.household_id
        loser.last_name = survivor.last_name
        taken.add(j)  # a survivor is never itself merged away
