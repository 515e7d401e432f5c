"""A small SVG line chart for the benchmark reports: no plotting library needed.

`line_chart` draws panels side by side, each with a logarithmic x axis (keys) and a linear y
axis from 0, one polyline per `Series`, coloured by its group (a peer) and dashed as asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

__all__ = ["Series", "line_chart"]

COLOURS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#57606a")
PANEL_W, PANEL_H = 460, 300
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 95


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    group: str
    dash: str = ""


def _nice_step(top: float) -> float:
    raw = top / 5 or 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * magnitude >= raw:
            return float(step * magnitude)
    return float(10 * magnitude)


def _number(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _tag(name: str, text: str | None = None, **attrs: object) -> str:
    """One SVG element; attribute names with '_' become '-' (stroke_width: stroke-width)."""
    rendered = " ".join(f'{key.replace("_", "-")}="{value}"' for key, value in attrs.items())
    if text is None:
        return f"<{name} {rendered}/>"
    return f"<{name} {rendered}>{escape(text)}</{name}>"


def _panel(
    x0: float,
    title: str,
    ylabel: str,
    series: list[Series],
    xlabel: str,
    colours: dict[str, str],
) -> list[str]:
    xs = [x for s in series for x, _ in s.points if x > 0]
    ys = [y for s in series for _, y in s.points]
    out = [f'<g transform="translate({x0},0)">']
    out.append(_tag("text", title, x=PANEL_W / 2, y=22, text_anchor="middle", font_weight="bold"))
    if not xs or not ys:
        return [*out, "</g>"]
    lo, hi = math.log10(min(xs)), math.log10(max(xs))
    hi = hi if hi > lo else lo + 1
    step = _nice_step(max(ys) * 1.05)
    top = step * math.ceil(max(ys) * 1.05 / step) or 1.0
    width, height = PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM

    def px(x: float) -> str:
        return f"{LEFT + (math.log10(x) - lo) / (hi - lo) * width:.1f}"

    def py(y: float) -> str:
        return f"{TOP + height - y / top * height:.1f}"

    out.append(
        _tag("rect", x=LEFT, y=TOP, width=width, height=height, fill="none", stroke="#d0d7de")
    )
    tick = 0.0
    while tick <= top + 1e-9:
        ty = py(tick)
        out.append(_tag("line", x1=LEFT, x2=LEFT + width, y1=ty, y2=ty, stroke="#eaeef2"))
        out.append(_tag("text", _number(tick), x=LEFT - 6, y=float(ty) + 4, text_anchor="end"))
        tick += step
    for x in sorted(set(xs)):
        out.append(_tag("text", _number(x), x=px(x), y=TOP + height + 16, text_anchor="middle"))
    out.append(_tag("text", xlabel, x=LEFT + width / 2, y=TOP + height + 34, text_anchor="middle"))
    out.append(
        _tag(
            "text",
            ylabel,
            transform=f"translate(16,{TOP + height / 2}) rotate(-90)",
            text_anchor="middle",
        )
    )
    for index, s in enumerate(series):
        colour = colours[s.group]
        dash = {"stroke_dasharray": s.dash} if s.dash else {}
        coords = " ".join(f"{px(x)},{py(y)}" for x, y in s.points if x > 0)
        out.append(
            _tag("polyline", points=coords, fill="none", stroke=colour, stroke_width=2, **dash)
        )
        for x, y in s.points:
            out.append(_tag("circle", cx=px(x), cy=py(y), r=3, fill=colour))
        lx = LEFT + (index % 2) * (width / 2)
        ly = TOP + height + 52 + (index // 2) * 16
        out.append(
            _tag("line", x1=lx, x2=lx + 24, y1=ly - 4, y2=ly - 4, stroke=colour, stroke_width=2,
                 **dash)
        )  # fmt: skip
        out.append(_tag("text", s.label, x=lx + 30, y=ly))
    return [*out, "</g>"]


def line_chart(panels: list[tuple[str, str, list[Series]]], xlabel: str) -> str:
    """An SVG document with one panel per (title, y label, series), side by side."""
    groups = list(dict.fromkeys(s.group for _, _, series in panels for s in series))
    colours = {group: COLOURS[i % len(COLOURS)] for i, group in enumerate(groups)}
    rows = max((len(series) + 1) // 2 for _, _, series in panels) if panels else 0
    height = PANEL_H + max(0, rows - 2) * 16
    width = PANEL_W * len(panels)
    body: list[str] = []
    for index, (title, ylabel, series) in enumerate(panels):
        body += _panel(index * PANEL_W, title, ylabel, series, xlabel, colours)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">\n'
        f'<rect width="{width}" height="{height}" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n"
    )
