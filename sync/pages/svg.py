"""Charts as inline SVG, drawn in Python: no script, no CDN, nothing fetched at view time.

Every chart has a ``<title>`` and ``<desc>`` (read by screen readers) and uses presentation
attributes only (no ``style=``), so the pages' Content-Security-Policy holds. Colours come from a
small palette that keeps 3:1 contrast against white; series are also told apart by dash pattern.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape

PALETTE = ("#1f4e79", "#b3541e", "#2e7d32", "#6a1b9a", "#37474f")
DASHES = ("", "6 3", "2 3", "8 3 2 3", "4 4")
W, H = 560, 260
PAD_L, PAD_R, PAD_T, PAD_B = 52, 16, 18, 42


@dataclass
class Series:
    """One line: points (x, y), and optionally a band (x, low, high) drawn behind it."""

    name: str
    points: list[tuple[float, float]]
    band: list[tuple[float, float, float]] = field(default_factory=list)


def _fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


class _Frame:
    """Maps data coordinates to the plot area and draws the axes."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float) -> None:
        self.x0, self.x1 = x0, (x1 if x1 > x0 else x0 + 1)
        self.y0, self.y1 = y0, (y1 if y1 > y0 else y0 + 1)

    def x(self, v: float) -> float:
        return PAD_L + (v - self.x0) / (self.x1 - self.x0) * (W - PAD_L - PAD_R)

    def y(self, v: float) -> float:
        return H - PAD_B - (v - self.y0) / (self.y1 - self.y0) * (H - PAD_T - PAD_B)

    def axes(self, x_label: str, y_label: str, x_ticks: Sequence[tuple[float, str]] | None = None) -> list[str]:
        out = [f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="#555"/>',
               f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="#555"/>']
        for i in range(5):
            v = self.y0 + (self.y1 - self.y0) * i / 4
            out.append(f'<line x1="{PAD_L}" y1="{self.y(v):.1f}" x2="{W - PAD_R}" y2="{self.y(v):.1f}" stroke="#ddd"/>')
            out.append(
                f'<text x="{PAD_L - 6}" y="{self.y(v) + 4:.1f}" text-anchor="end" font-size="11" '
                f'fill="#222">{_fmt(v)}</text>'
            )
        ticks = x_ticks if x_ticks is not None else [(self.x0 + (self.x1 - self.x0) * i / 4, "") for i in range(5)]
        for v, label in ticks:
            text = escape(label) if label else _fmt(v)
            out.append(
                f'<text x="{self.x(v):.1f}" y="{H - PAD_B + 15}" text-anchor="middle" font-size="11" '
                f'fill="#222">{text}</text>'
            )
        out.append(
            f'<text x="{(PAD_L + W - PAD_R) / 2}" y="{H - 6}" text-anchor="middle" font-size="12" '
            f'fill="#222">{escape(x_label)}</text>'
        )
        out.append(f'<text x="12" y="{(PAD_T + H - PAD_B) / 2}" text-anchor="middle" font-size="12" fill="#222" '
                   f'transform="rotate(-90 12 {(PAD_T + H - PAD_B) / 2})">{escape(y_label)}</text>')
        return out


def _svg(title: str, desc: str, body: list[str], legend: Sequence[str] = ()) -> Markup:
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H + 18 * ((len(legend) + 2) // 3)}" '
             f'role="img" class="chart"><title>{escape(title)}</title><desc>{escape(desc)}</desc>', *body]
    for i, name in enumerate(legend):
        lx, ly = PAD_L + (i % 3) * 170, H + 12 + 18 * (i // 3)
        dash = f' stroke-dasharray="{DASHES[i % len(DASHES)]}"' if DASHES[i % len(DASHES)] else ""
        parts.append(
            f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 22}" y2="{ly - 4}" stroke="{PALETTE[i % len(PALETTE)]}" '
            f'stroke-width="2.5"{dash}/><text x="{lx + 28}" y="{ly}" font-size="12" fill="#222">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def empty(title: str, message: str) -> Markup:
    """A placeholder that says why there is no chart (honest about missing data)."""
    return Markup(f'<p class="nodata"><strong>{escape(title)}:</strong> {escape(message)}</p>')


def line_chart(title: str, series: Sequence[Series], *, x_label: str, y_label: str,
               x_ticks: Sequence[tuple[float, str]] | None = None, diagonal: bool = False,
               y_range: tuple[float, float] | None = None) -> Markup:
    """Lines with optional confidence bands; ``diagonal`` draws y = x (calibration, gains)."""
    xs = [p[0] for s in series for p in s.points]
    ys = [p[1] for s in series for p in s.points] + [b for s in series for _, lo, hi in s.band for b in (lo, hi)]
    if not xs:
        return empty(title, "no data yet")
    y0, y1 = y_range if y_range else (min(0.0, min(ys)), max(ys) * 1.05 if max(ys) > 0 else 1.0)
    f = _Frame(min(xs), max(xs), y0, y1)
    body = f.axes(x_label, y_label, x_ticks)
    if diagonal:
        lo, hi = max(f.x0, f.y0), min(f.x1, f.y1)
        body.append(f'<line x1="{f.x(lo):.1f}" y1="{f.y(lo):.1f}" x2="{f.x(hi):.1f}" y2="{f.y(hi):.1f}" '
                    f'stroke="#888" stroke-dasharray="3 3"/>')
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        if s.band:
            top = " ".join(f"{f.x(x):.1f},{f.y(hi):.1f}" for x, _, hi in s.band)
            bottom = " ".join(f"{f.x(x):.1f},{f.y(lo):.1f}" for x, lo, _ in reversed(s.band))
            body.append(f'<polygon points="{top} {bottom}" fill="{colour}" fill-opacity="0.15"/>')
        pts = " ".join(f"{f.x(x):.1f},{f.y(y):.1f}" for x, y in s.points)
        dash = f' stroke-dasharray="{DASHES[i % len(DASHES)]}"' if DASHES[i % len(DASHES)] else ""
        body.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2.5"{dash}/>')
        for x, y in s.points:
            body.append(f'<circle cx="{f.x(x):.1f}" cy="{f.y(y):.1f}" r="3" fill="{colour}">'
                        f'<title>{escape(s.name)}: {_fmt(y)}</title></circle>')
    desc = "; ".join(f"{s.name}: " + ", ".join(f"{_fmt(x)} -> {_fmt(y)}" for x, y in s.points[:12]) for s in series)
    return _svg(title, desc, body, [s.name for s in series])


def bar_chart(title: str, bars: Sequence[tuple[str, float]], *, x_label: str, y_label: str,
              colour: str = PALETTE[0]) -> Markup:
    """Vertical bars with a label under each (histograms, counts per day)."""
    if not bars:
        return empty(title, "no data yet")
    top = max(v for _, v in bars) or 1.0
    f = _Frame(0, len(bars), 0, top * 1.05)
    step = max(1, len(bars) // 8)  # at most ~8 labels, so they never overlap
    ticks = [(i + 0.5, label) for i, (label, _) in enumerate(bars) if i % step == 0]
    body = f.axes(x_label, y_label, ticks)
    width = (W - PAD_L - PAD_R) / len(bars)
    for i, (label, v) in enumerate(bars):
        x, y = f.x(i) + width * 0.1, f.y(v)
        body.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{width * 0.8:.1f}" height="{H - PAD_B - y:.1f}" fill="{colour}">'
            f"<title>{escape(label)}: {_fmt(v)}</title></rect>"
        )
    desc = ", ".join(f"{label}: {_fmt(v)}" for label, v in bars[:40])
    return _svg(title, desc, body)


def hbar_chart(title: str, bars: Sequence[tuple[str, float]], *, x_label: str) -> Markup:
    """Horizontal bars with names on the left (feature importance)."""
    if not bars:
        return empty(title, "no data")
    top = max(abs(v) for _, v in bars) or 1.0
    row, left = 22, 190
    height = PAD_T + row * len(bars) + 30
    desc = escape(", ".join(f"{n}: {_fmt(v)}" for n, v in bars))
    body = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" role="img" class="chart">'
            f'<title>{escape(title)}</title><desc>{desc}</desc>']
    for i, (name, v) in enumerate(bars):
        y = PAD_T + i * row
        width = max(abs(v) / top * (W - left - 60), 1)
        body.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" font-size="12" fill="#222">{escape(name[:28])}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{width:.1f}" height="{row - 6}" fill="{PALETTE[0]}"/>'
            f'<text x="{left + width + 4:.1f}" y="{y + 14}" font-size="11" fill="#222">{_fmt(v)}</text>'
        )
    body.append(
        f'<text x="{(left + W) / 2}" y="{height - 8}" text-anchor="middle" font-size="12" '
        f'fill="#222">{escape(x_label)}</text></svg>'
    )
    return Markup("".join(body))
