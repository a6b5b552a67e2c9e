"""The status and lift pages' charts, built from the data dicts of ``status_data`` and ``lift_data``."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from sync.pages import svg


def segments_chart(firm: dict[str, Any]) -> Markup:
    """Members per segment over the firm's recent runs (dry runs included: they score too)."""
    runs = [r for r in firm["history"] if r["segments"]]
    if not runs:
        return svg.empty("Segment sizes over time", "no run has assigned segments yet")
    names = sorted({name for r in runs for name in r["segments"]})
    series = [svg.Series(name, [(float(i), float((r["segments"].get(name) or {}).get("members", 0) or 0))
                                for i, r in enumerate(runs)]) for name in names]
    ticks = [(float(i), f"#{r['id']}") for i, r in enumerate(runs)][-8:]
    return svg.line_chart("Segment sizes over time", series, x_label="run", y_label="members", x_ticks=ticks)


def consent_chart(firm: dict[str, Any]) -> Markup:
    """Consent events recorded per day (granted and withdrawn), last 30 days."""
    days = firm["consent_days"]
    if not any(d["granted"] or d["withdrawn"] for d in days):
        return svg.empty("Consent events per day", "no consent events recorded in the last 30 days")
    series = [svg.Series("granted", [(float(i), float(d["granted"])) for i, d in enumerate(days)]),
              svg.Series("withdrawn", [(float(i), float(d["withdrawn"])) for i, d in enumerate(days)])]
    ticks = [(float(i), d["day"][5:]) for i, d in enumerate(days) if i % 7 == 0 or i == len(days) - 1]
    return svg.line_chart("Consent events per day", series, x_label="day (UTC)", y_label="events", x_ticks=ticks)


def lift_chart(data: dict[str, Any]) -> Markup:
    """Cumulative outcome rate of members and holdout since assignment, with 95% bands."""
    points = data.get("points") or []
    if not points:
        return svg.empty(
            "Members vs holdout", data.get("missing") or "no outcome data since the segments were assigned"
        )
    series = [svg.Series("segment members", [(p["day"], p["member_rate"]) for p in points],
                         [(p["day"], *p["member_band"]) for p in points])]
    if data.get("holdout"):
        series.append(svg.Series("holdout (not targeted)", [(p["day"], p["holdout_rate"]) for p in points],
                                 [(p["day"], *p["holdout_band"]) for p in points]))
    top = max(max(b[2] for s in series for b in s.band), 0.05)
    return svg.line_chart(f"Share with {data['outcome']}: members vs holdout", series,
                          x_label="days since the segments were assigned", y_label="cumulative rate",
                          y_range=(0.0, min(1.0, top * 1.05)))
