"""Accuracy against NEC as an inline SVG (no plotting library): one line per concept method from
its results row's `nec_curve` ({"<nec>": top1, ..., "full": top1}, evaluation/nec.py), NEC on a
log axis, the protocol's points joined in order of NEC (results.json keeps its keys sorted as text,
"1", "10", "2", so the order is the numbers', never the keys'), and the fitted model ("full") an
open circle at its own NEC, not joined to them. Used by report.html and by
benchmarks/fig_nec_curve.py for the docs' figure."""

from __future__ import annotations

import math
from html import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def curve_parts(row: dict) -> tuple[list[tuple[float, float]], tuple[float, float] | None]:
    """(the protocol's (NEC reached, top-1) points in order of the NEC asked, the fitted model's
    point at its own NEC or None) of a results row."""
    curve, reached = row.get("nec_curve") or {}, row.get("nec_curve_reached") or {}
    line, full = [], None
    for key, top1 in curve.items():
        nec = reached.get(key, None if key == "full" else float(key))
        if nec is None or top1 is None or nec <= 0:
            continue
        if key == "full":
            full = (float(nec), float(top1))
        else:
            line.append((float(key), float(nec), float(top1)))
    line.sort()
    return [(nec, top1) for _, nec, top1 in line], full


def curve_points(row: dict) -> list[tuple[float, float]]:
    """(NEC, top-1) pairs of a results row in order of NEC, the "full" point last."""
    line, full = curve_parts(row)
    return line + ([full] if full else [])


def nec_curve_svg(results: dict, width: int = 520, height: int = 300, title: str = "") -> str:
    """The plot of every row of `results` that has a curve; '' when none has."""
    parts = {name: curve_parts(r) for name, r in results.items() if r.get("nec_curve")}
    parts = {n: p for n, p in parts.items() if p[0] or p[1]}
    lines = {n: line + ([full] if full else []) for n, (line, full) in parts.items()}
    if not lines:
        return ""
    left, right, top, bottom = 48, 130, 24 if title else 10, 36
    xs = [x for p in lines.values() for x, _ in p]
    ys = [y for p in lines.values() for _, y in p]
    x0, x1 = math.log10(min(xs)), math.log10(max(max(xs), min(xs) * 2))
    y0, y1 = max(0.0, math.floor(min(ys) * 10) / 10), min(1.0, math.ceil(max(ys) * 10) / 10 + 1e-9)
    if y1 - y0 < 0.1:
        y0 = max(0.0, y1 - 0.1)
    pw, ph = width - left - right, height - top - bottom

    def px(x):
        return left + (math.log10(x) - x0) / (x1 - x0) * pw

    def py(y):
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    out = [f"<svg id='nec-curve' width='{width}' height='{height}' role='img' "
           f"xmlns='http://www.w3.org/2000/svg' font-family='sans-serif' font-size='11'>",
           f"<title>top-1 accuracy against NEC (effective concepts per class)</title>",
           f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='none' stroke='#999'/>"]
    if title:
        out.append(f"<text x='{left}' y='14' font-size='12'>{escape(title)}</text>")
    ticks = [t for t in (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000) if min(xs) <= t <= max(xs) * 1.01]
    for t in ticks:
        out.append(f"<line x1='{px(t):.1f}' x2='{px(t):.1f}' y1='{top}' y2='{top + ph}' stroke='#eee'/>"
                   f"<text x='{px(t):.1f}' y='{top + ph + 14}' text-anchor='middle'>{t}</text>")
    steps = max(1, round((y1 - y0) / 0.1))
    for i in range(steps + 1):
        y = y0 + (y1 - y0) * i / steps
        out.append(f"<line x1='{left}' x2='{left + pw}' y1='{py(y):.1f}' y2='{py(y):.1f}' stroke='#eee'/>"
                   f"<text x='{left - 4}' y='{py(y) + 4:.1f}' text-anchor='end'>{100 * y:.0f}</text>")
    out.append(f"<text x='{left + pw / 2}' y='{height - 4}' text-anchor='middle'>NEC (effective concepts per "
               "class, log scale)</text>"
               f"<text x='12' y='{top + ph / 2}' text-anchor='middle' "
               f"transform='rotate(-90 12 {top + ph / 2})'>top-1 %</text>")
    for i, (name, (line, full)) in enumerate(parts.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in line)
        out.append(f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='2'>"
                   f"<title>{escape(name)}</title></polyline>")
        for x, y, fitted in [(x, y, False) for x, y in line] + ([(*full, True)] if full else []):
            out.append(f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='{4 if fitted else 2.5}' "
                       f"fill='{'white' if fitted else colour}' stroke='{colour}'><title>{escape(name)}: NEC "
                       f"{x:.1f}, top-1 {100 * y:.1f}%{' (as fitted)' if fitted else ''}</title></circle>")
        ly = top + 12 + 16 * i
        out.append(f"<line x1='{left + pw + 10}' x2='{left + pw + 28}' y1='{ly - 4}' y2='{ly - 4}' "
                   f"stroke='{colour}' stroke-width='2'/><text x='{left + pw + 32}' y='{ly}'>{escape(name)}</text>")
    out.append("</svg>")
    return "".join(out)


def nec_curve_section(results: dict) -> str:
    """report.html's section: the plot and how it was made ('' when no method has a curve)."""
    svg = nec_curve_svg(results)
    if not svg:
        return ""
    return ("<section id='nec-accuracy'><h2>Accuracy against NEC</h2><p class='small'>Top-1 on the test "
            "images of each concept method made to that many effective concepts per class by the run's NEC "
            "protocol ([evaluation] nec_protocol; VLG-CBM's by default), and, as the open circle, the model "
            "as fitted at its own NEC ([evaluation] nec_curve; results.json <code>nec_curve</code>).</p>"
            + svg + "</section>")
