"""Benchmark: point-in-time features and scoring for 1,000,000 synthetic contacts, plus truth grading.

    .venv/bin/python bench/bench_scoring.py [--contacts 1000000] [--book 10000] [--out bench/out]

1. Generates a synthetic book with numpy (about 20 events per contact over 15 months) in which a
   hidden intent drives pricing/calculator views and clicks, and the chance of an upgrade in the
   next 90 days depends on recent views, clicks and a hidden per-contact effect. The true
   probability for the 90 days after ``as_of`` is known, so scores are graded against it.
2. Times: features as of the cutoff, training (propensity to upgrade within 90 days, on at most
   300k rows), and scoring every contact (features + calibrated model).
3. Grades a sandbox-generated advisor book (``sandbox.book``) the same way, against ``book.truth``.

Prints a summary and writes JSON to ``bench/out/bench_scoring.json``. Peak memory is the
process's maximum resident set size (``resource.getrusage``), which generation dominates, and
on Linux also the peak of the features/training/scoring phase alone (VmHWM after a reset).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scoring.features import build_features  # noqa: E402 - after the path fix for direct runs
from scoring.models import TrainedModel, predict, train  # noqa: E402
from scoring.specs import FeatureSpec, ScoreSpec  # noqa: E402

DAY_NS = 86_400 * 10**9
AS_OF = pd.Timestamp("2025-06-30T00:00:00Z")
HISTORY_DAYS = 455  # 15 months
SPEC = ScoreSpec("upgrade", "propensity", outcome_event="upgrade", horizon_days=90,
                 features=FeatureSpec(numeric_properties=("aum",), categorical_properties=("tier",),
                                      sensitive_attributes=("age",)))


def peak_rss_mb() -> float:
    """Maximum resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_phase_peak() -> bool:
    """Reset the kernel's high-water mark (VmHWM) so a phase's own peak can be read; False if unsupported.

    getrusage's maximum never goes down, and generating the synthetic book costs more memory
    than scoring it, so the scoring phase is measured with VmHWM after this reset.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def phase_peak_mb() -> float | None:
    """VmHWM (peak RSS since the last reset) in MB, or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _upgrade_prob(views: np.ndarray, clicks: np.ndarray, tier: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """P(upgrade within 90 days) from views/clicks in the 60 days before, tier and a hidden effect."""
    logit = -4.2 + 0.9 * np.log1p(views) + 0.6 * np.log1p(clicks) - 0.5 * tier + hidden
    return 1 / (1 + np.exp(-logit))


def synthetic_book(n: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(contacts, events before AS_OF, true P(upgrade in the 90 days after AS_OF)). Cheap: numpy only."""
    rng = np.random.default_rng(seed)
    start = AS_OF.value - HISTORY_DAYS * DAY_NS
    ids = np.char.add("c", np.arange(n).astype("U7"))
    intent = rng.gamma(0.6, 1.0, n)  # hidden, heavy-tailed
    engage = rng.beta(2, 5, n)
    hidden = rng.normal(0, 0.7, n)
    tier = rng.choice(3, n, p=[0.7, 0.25, 0.05])
    created = start - rng.integers(0, 2000, n) * DAY_NS
    contacts = pd.DataFrame({"contact_id": ids, "created_at": pd.to_datetime(created, utc=True),
                             "aum": np.round(rng.lognormal(11.5, 1.0, n), -2).astype(np.float32),
                             "tier": pd.Categorical.from_codes(tier, ["core", "premier", "private"]),
                             "age": rng.integers(25, 85, n)})
    parts: list[tuple[np.ndarray, str, np.ndarray, np.ndarray | None, str | None]] = []

    def spread(counts: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        who = np.repeat(np.arange(n), counts)
        return who, rng.integers(lo, hi, who.size)

    # Monthly emails (15 campaigns); opens follow engagement.
    sends = np.full(n, 15)
    opens = rng.binomial(15, engage)
    for kind, counts in (("email_sent", sends), ("email_open", opens)):
        who, at = spread(counts, start, AS_OF.value)
        parts.append((who, kind, at, None, None))
    views = rng.poisson(1.5 + 2 * engage, n)
    who, at = spread(views, start, AS_OF.value)
    parts.append((who, "page_view", at, None, "/blog"))
    deposits = rng.poisson(0.8, n)
    who, at = spread(deposits, start, AS_OF.value)
    parts.append((who, "deposit", at, np.round(rng.lognormal(8, 1, who.size), -1), None))

    # Intent shows as clicks and calculator/pricing views in the 60 days before an upgrade window,
    # and the same law decides upgrades in the 90 days before AS_OF (what a model can learn from)
    # and in the 90 days after it (the truth it is graded against). Intent drifts between the two.
    def burst(level: np.ndarray, lo: int) -> tuple[np.ndarray, np.ndarray]:
        hi_views, clicks = rng.poisson(0.5 * level), rng.poisson(0.15 * level * (0.5 + engage))
        for kind, counts, url in (("page_view", hi_views, "/tools/retirement-calculator"),
                                  ("email_click", clicks, None)):
            who, at = spread(counts, lo, lo + 60 * DAY_NS)
            parts.append((who, kind, at, None, url))
        return hi_views, clicks

    intent_past = intent * rng.lognormal(0, 0.5, n)
    intent_now = 0.5 * intent_past + 0.5 * intent * rng.lognormal(0, 0.5, n)
    v_past, c_past = burst(intent_past, AS_OF.value - 150 * DAY_NS)
    upgraded = rng.random(n) < _upgrade_prob(v_past, c_past, tier, hidden)
    who = np.flatnonzero(upgraded)
    parts.append((who, "upgrade", rng.integers(AS_OF.value - 90 * DAY_NS, AS_OF.value, who.size), None, None))
    v_now, c_now = burst(intent_now, AS_OF.value - 60 * DAY_NS)
    truth = _upgrade_prob(v_now, c_now, np.minimum(tier + upgraded, 2), hidden)

    codes = np.concatenate([p[0] for p in parts])
    type_names = sorted({p[1] for p in parts})
    types = np.concatenate([np.full(p[0].size, type_names.index(p[1]), dtype=np.int8) for p in parts])
    urls = [p[4] for p in parts]
    url_names = sorted({u for u in urls if u})
    url_codes = np.concatenate([np.full(p[0].size, url_names.index(p[4]) if p[4] else -1, dtype=np.int8)
                                for p in parts])
    values = np.concatenate([p[3] if p[3] is not None else np.full(p[0].size, np.nan) for p in parts])
    at = np.concatenate([p[2] for p in parts])
    events = pd.DataFrame({
        "contact_id": pd.Categorical.from_codes(codes, categories=ids),
        "type": pd.Categorical.from_codes(types, categories=type_names),
        "occurred_at": pd.to_datetime(at, utc=True),
        "value": values,
        "url": pd.Categorical.from_codes(url_codes, categories=url_names),
    })
    return contacts, events, truth


def bench_synthetic(n: int) -> dict:
    t0 = time.perf_counter()
    contacts, events, truth = synthetic_book(n)
    gen_s = time.perf_counter() - t0
    gen_rss = peak_rss_mb()
    print(f"generated {n:,} contacts and {len(events):,} events in {gen_s:.1f}s "
          f"(peak memory so far {gen_rss:,.0f} MB)", flush=True)

    resettable = reset_phase_peak()
    t0 = time.perf_counter()
    feats = build_features(contacts, events, AS_OF, SPEC.features)
    feat_s = time.perf_counter() - t0
    print(f"features as of the cutoff: {feat_s:.1f}s ({n / feat_s:,.0f} contacts/s), "
          f"{feats.shape[1]} columns", flush=True)
    del feats

    t0 = time.perf_counter()
    model = train(SPEC, contacts, events, as_of=AS_OF)
    train_s = time.perf_counter() - t0
    assert isinstance(model, TrainedModel), model
    print(f"trained on {model.metrics.get('rows'):,} rows in {train_s:.1f}s", flush=True)

    t0 = time.perf_counter()
    scores = predict(model, contacts, events, as_of=AS_OF)
    score_s = time.perf_counter() - t0
    print(f"scored (features + model) in {score_s:.1f}s ({n / score_s:,.0f} contacts/s)", flush=True)
    work_peak = phase_peak_mb() if resettable else None
    if work_peak is not None:
        print(f"peak memory while computing features, training and scoring (data included): {work_peak:,.0f} MB",
              flush=True)
    rng = np.random.default_rng(99)
    outcome = rng.random(n) < truth
    auc = float(roc_auc_score(outcome, scores.to_numpy()))
    oracle = float(roc_auc_score(outcome, truth))
    print(f"AUC vs simulated outcome: {auc:.3f} (the true probability itself: {oracle:.3f})", flush=True)
    return {"contacts": n, "events": len(events), "generate_s": round(gen_s, 2),
            "peak_rss_mb_after_generation": round(gen_rss),
            "peak_rss_mb_features_train_score": None if work_peak is None else round(work_peak),
            "features_s": round(feat_s, 2), "features_contacts_per_s": round(n / feat_s),
            "train_s": round(train_s, 2), "train_rows": model.metrics.get("rows"),
            "score_s": round(score_s, 2), "score_contacts_per_s": round(n / score_s),
            "auc_vs_truth": round(auc, 4), "auc_oracle": round(oracle, 4)}


def bench_sandbox_book(n: int) -> dict:
    from sandbox.book import generate_book

    t0 = time.perf_counter()
    book = generate_book(n, seed=5)
    people = pd.DataFrame(
        {
            "contact_id": [p.key for p in book.people],
            "created_at": [p.created_at for p in book.people],
            "aum": [p.aum for p in book.people],
            "age": [p.age for p in book.people],
        }
    )
    ev = book.events
    events = pd.DataFrame({"contact_id": [e.person_key for e in ev], "type": [e.type for e in ev],
                           "occurred_at": pd.to_datetime([e.occurred_at for e in ev], utc=True),
                           "value": [e.value for e in ev], "url": [e.url for e in ev],
                           "session_id": [e.session_id for e in ev]})
    gen_s = time.perf_counter() - t0
    as_of = pd.Timestamp(book.as_of)
    out: dict = {"contacts": n, "events": len(events), "generate_s": round(gen_s, 2)}
    truth = pd.DataFrame({k: {"up": t.upgraded_90d, "churn": t.churned_90d, "p": t.propensity}
                          for k, t in book.truth.items()}).T
    spec_features = FeatureSpec(numeric_properties=("aum",), sensitive_attributes=("age",))
    for name, spec, column in (
        ("upgrade", ScoreSpec("upgrade", "propensity", outcome_event="upgrade", features=spec_features), "up"),
        ("churn", ScoreSpec("churn", "churn", inactive_days=90, features=spec_features), "churn"),
    ):
        t0 = time.perf_counter()
        model = train(spec, people, events, as_of=as_of)
        if not isinstance(model, TrainedModel):
            out[name] = {"verdict": model.reason}
            continue
        scores = predict(model, people, events, as_of=as_of)
        y = truth.loc[scores.index, column].astype(int)
        out[name] = {
            "auc_vs_truth": round(float(roc_auc_score(y, scores)), 4),
            "seconds": round(time.perf_counter() - t0, 2),
        }
    out["upgrade"]["auc_oracle"] = round(float(roc_auc_score(truth["up"].astype(int), truth["p"].astype(float))), 4)
    print(f"sandbox book {n:,}: {out}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--book", type=int, default=10_000, help="sandbox book size (0: skip)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
              "machine": platform.machine(), "synthetic": bench_synthetic(args.contacts)}
    if args.book:
        result["sandbox_book"] = bench_sandbox_book(args.book)
    # Resetting VmHWM also resets getrusage's maximum on Linux, so take the larger of the phases.
    result["peak_rss_mb"] = round(max(peak_rss_mb(), result["synthetic"]["peak_rss_mb_after_generation"]))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_scoring.json"
    path.write_text(json.dumps(result, indent=2))
    syn = result["synthetic"]
    print(f"peak memory {result['peak_rss_mb']:,} MB (generating the data: {syn['peak_rss_mb_after_generation']:,} MB;"
          f" features + training + scoring: {syn['peak_rss_mb_features_train_score'] or '-'} MB); wrote {path}")


if __name__ == "__main__":
    main()
