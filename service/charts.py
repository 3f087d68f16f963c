"""Small charts as inline SVG, drawn on the server: a stacked bar chart and a horizontal bar chart.

Why SVG text and not a picture: the browser shapes Khmer in ``<text>`` (no
chart library on the server can), the chart works without JavaScript and
weighs a few kilobytes. Every chart is an ``role="img"`` with an
``aria-label``, a ``<title>`` and a ``<desc>``, and each column or bar has
its own ``<title>`` (a tooltip). Pages put a data table next to each chart,
so nothing is told by colour alone.

Only presentation attributes are used (``fill``, ``font-size``), never
``style``, so the staff pages' Content-Security-Policy (no inline styles)
holds. Labels arrive translated; this module knows no language and no Flask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Callable, Sequence

from markupsafe import Markup

GRID = "#d9dedb"
AXIS = "#4a4a4a"
TEXT = "#1a1a1a"
FONT_SIZE = 12


@dataclass(frozen=True)
class Series:
    """One stacked layer: a label, its colour and one value per column."""

    label: str
    colour: str
    values: Sequence[int]


@dataclass(frozen=True)
class Bar:
    """One bar of a horizontal bar chart."""

    label: str
    value: int
    colour: str


def _a(text: object) -> str:
    return escape(str(text), quote=True)


def nice_ceiling(value: float, ticks: int = 5) -> tuple[float, float]:
    """An axis top at or above ``value`` and a step of 1, 2, 2.5 or 5 × 10ⁿ giving about ``ticks`` gridlines.

    Steps are whole numbers (these are counts), so 2.5 is used from 25 on.
    """
    if value <= 0:
        return 1.0, 1.0
    raw = value / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw and (m != 2.5 or power >= 10))
    step = max(step, 1.0)
    return math.ceil(value / step) * step, step


def _open_svg(chart_id: str, width: int, height: int, title: str, desc: str) -> list[str]:
    uid = _a(chart_id)
    return [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{_a(title)}" '
        f'aria-describedby="{uid}-desc" font-size="{FONT_SIZE}" fill="{TEXT}" xmlns="http://www.w3.org/2000/svg">',
        f'<title>{_a(title)}</title><desc id="{uid}-desc">{_a(desc)}</desc>',
    ]


def stacked_bars(chart_id: str, series: Sequence[Series], *, column_labels: Sequence[str],
                 ticks: Sequence[tuple[int, str]], title: str, desc: str, number: Callable[[int], str] = str,
                 width: int = 720, height: int = 260) -> Markup:
    """Columns of stacked values (one per ``column_labels`` entry), bottom layer first; ``chart_id`` is unique
    in the page (it names the ``<desc>``).

    ``ticks`` are ``(column index, label)`` pairs written under the axis (say,
    the first week of each month); each column's tooltip gives its label and
    every layer's value.
    """
    columns = len(column_labels)
    if any(len(s.values) != columns for s in series):
        raise ValueError("every series needs one value per column")
    left, right, top, bottom = 52, 8, 10, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(s.values[i] for s in series) for i in range(columns)]
    y_max, step = nice_ceiling(max(totals, default=0))
    scale = plot_h / y_max
    band = plot_w / max(columns, 1)
    bar_w = max(band * 0.8, min(band, 1.0))
    out = _open_svg(chart_id, width, height, title, desc)

    out.append(f'<g stroke="{GRID}" stroke-width="1">')
    labels = []
    n_steps = int(round(y_max / step))
    for k in range(n_steps + 1):
        y = top + plot_h - k * step * scale
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        labels.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_a(number(int(k * step)))}</text>')
    out.append("</g>")
    out.extend(labels)

    base = [0] * columns
    for s in series:
        parts = []
        for i, value in enumerate(s.values):
            if value <= 0:
                continue
            x = left + i * band + (band - bar_w) / 2
            y = top + plot_h - (base[i] + value) * scale
            parts.append(f"M{x:.1f} {y:.1f}h{bar_w:.1f}v{value * scale:.1f}h{-bar_w:.1f}z")
            base[i] += value
        if parts:
            out.append(f'<path fill="{_a(s.colour)}" stroke="#fff" stroke-width="0.5" d="{"".join(parts)}"/>')

    out.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{AXIS}"/>')
    for index, label in ticks:
        x = left + (index + 0.5) * band
        anchor = "start" if x - left < 30 else "end" if width - right - x < 30 else "middle"
        out.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="{anchor}">{_a(label)}</text>')
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="{AXIS}"/>')

    # A transparent column over each bar carries its tooltip.
    out.append('<g fill="transparent">')
    for i, label in enumerate(column_labels):
        parts = ", ".join(f"{s.label} {number(s.values[i])}" for s in series if s.values[i])
        tip = f"{label}: {number(totals[i])}" + (f" ({parts})" if parts and len(series) > 1 else "")
        out.append(f'<rect x="{left + i * band:.1f}" y="{top}" width="{band:.1f}" height="{plot_h}">'
                   f"<title>{_a(tip)}</title></rect>")
    out.append("</g></svg>")
    return Markup("".join(out))


def horizontal_bars(chart_id: str, bars: Sequence[Bar], *, title: str, desc: str, number: Callable[[int], str] = str,
                    width: int = 720, row: int = 30, label_width: int = 190) -> Markup:
    """One labelled bar per item, with its value and share of the total written after it."""
    total = sum(b.value for b in bars)
    value_room = 120
    plot_w = width - label_width - value_room
    top_value = max((b.value for b in bars), default=0) or 1
    height = row * len(bars) + 8
    out = _open_svg(chart_id, width, height, title, desc)
    for i, bar in enumerate(bars):
        y = 4 + i * row
        w = plot_w * bar.value / top_value
        share = f" ({round(100 * bar.value / total)}%)" if total else ""
        text = f"{number(bar.value)}{share}"
        out.append(f"<g><title>{_a(bar.label)}: {_a(text)}</title>")
        out.append(f'<text x="{label_width - 8}" y="{y + row / 2 + 4:.1f}" text-anchor="end">{_a(bar.label)}</text>')
        if bar.value:
            out.append(f'<rect x="{label_width}" y="{y + 4}" width="{max(w, 1):.1f}" height="{row - 8}" '
                       f'fill="{_a(bar.colour)}"/>')
        out.append(f'<text x="{label_width + max(w, 1) + 6:.1f}" y="{y + row / 2 + 4:.1f}">{_a(text)}</text></g>')
    out.append(f'<line x1="{label_width}" x2="{label_width}" y1="2" y2="{height - 2}" stroke="{AXIS}"/>')
    out.append("</svg>")
    return Markup("".join(out))


def swatch(colour: str, size: int = 12) -> Markup:
    """A small square of colour for an HTML legend (SVG, so no inline style is needed)."""
    return Markup(f'<svg class="swatch" width="{size}" height="{size}" aria-hidden="true" focusable="false">'
                  f'<rect width="{size}" height="{size}" fill="{_a(colour)}"/></svg>')
