"""The batch report: one self-contained HTML file with its charts drawn as inline SVG.

No script and no network are needed to view it: the charts are SVG written here, so the
file opens the same in a browser, a mail attachment or an air-gapped machine. Figures
are gathered in one streaming pass over the ledger, so a million-line batch fits.
"""

from __future__ import annotations

import html
import json
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from schemas.result import BatchStatus
from workers.collector import output_lines
from workers.ledger import BatchKeys, Ledger

#: Upper bounds (seconds) of the latency histogram's bins; the last bin is open.
LATENCY_BINS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
COLOURS = ("#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#14b8a6", "#f97316", "#64748b")


@dataclass
class Figures:
    """Everything the report draws, gathered in one pass over the batch's lines."""

    status: BatchStatus
    tiers: Counter[str] = field(default_factory=Counter)
    tier_cost: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    latency: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    errors: Counter[str] = field(default_factory=Counter)
    answered_by: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    per_tenth: Counter[int] = field(default_factory=Counter)  # lines recorded per 100 ms


def gather(ledger: Ledger, batch_id: str) -> Figures:
    status = ledger.status(batch_id)
    if status is None:
        raise LookupError(batch_id)
    figures = Figures(status)
    for raw in output_lines(ledger, batch_id):
        info = json.loads(raw)["turnout"]
        tier = info.get("tier") or "-"
        figures.tiers[tier] += 1
        figures.tier_cost[tier] += info.get("cost_usd") or 0.0
        figures.latency[tier][_bin(info.get("latency_s") or 0.0)] += 1
        figures.answered_by[info.get("deployment") or "-"] += 1
        for deployment in info.get("fallbacks") or []:
            figures.fallbacks[deployment] += 1
    for raw in ledger.error_lines(batch_id):
        figures.errors[json.loads(raw)["error"]["code"]] += 1
    _throughput(ledger, batch_id, figures)
    return figures


def _bin(seconds: float) -> int:
    for index, bound in enumerate(LATENCY_BINS):
        if seconds <= bound:
            return index
    return len(LATENCY_BINS)


def _throughput(ledger: Ledger, batch_id: str, figures: Figures) -> None:
    """Lines recorded per 100 ms, from the events stream's ids (Redis millisecond timestamps)."""
    key, start = BatchKeys(batch_id).events, "-"
    while True:
        entries = ledger.redis.xrange(key, min=start, count=5000)
        for entry_id, _ in entries:
            figures.per_tenth[int(entry_id.split(b"-")[0]) // 100] += 1
        if len(entries) < 5000:
            return
        start = "(" + entries[-1][0].decode()


# --- drawing -----------------------------------------------------------------------------


def bar_chart(title: str, items: Sequence[tuple[str, float]], unit: str = "", chart_id: str = "") -> str:
    """A horizontal bar chart as SVG."""
    if not items:
        return _empty(title, chart_id)
    width, row, label_w = 640, 28, 170
    top = max(value for _, value in items) or 1.0
    bars = []
    for i, (label, value) in enumerate(items):
        y = 10 + i * row
        length = max(2.0, (width - label_w - 120) * value / top)
        bars.append(
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end">{html.escape(label)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 4}" width="{length:.1f}" height="{row - 8}" fill="{COLOURS[i % len(COLOURS)]}"/>'
            f'<text x="{label_w + length + 6:.1f}" y="{y + 17}">{_fmt(value)}{unit}</text>'
        )
    height = 20 + row * len(items)
    return _figure(title, chart_id, f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}">{"".join(bars)}</svg>')


def line_chart(title: str, points: list[tuple[float, float]], x_label: str, y_label: str, chart_id: str = "") -> str:
    """A line chart (with its area filled) as SVG."""
    if len(points) < 2:
        return _empty(title, chart_id) if not points else bar_chart(title, [(x_label, points[0][1])], chart_id=chart_id)
    width, height, pad = 640, 220, 40
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y1 = min(xs), max(xs), max(ys) or 1.0

    def at(x: float, y: float) -> str:
        return f"{pad + (width - 2 * pad) * (x - x0) / ((x1 - x0) or 1):.1f},{height - pad - (height - 2 * pad) * y / y1:.1f}"

    line = " ".join(at(x, y) for x, y in points)
    area = f"{at(x0, 0)} {line} {at(x1, 0)}"
    svg = (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
        f'<polygon class="area" points="{area}" fill="#3b82f633"/>'
        f'<polyline class="line" points="{line}" fill="none" stroke="#3b82f6" stroke-width="2"/>'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#94a3b8"/>'
        f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle">{html.escape(x_label)} (0 to {_fmt(x1 - x0)})</text>'
        f'<text x="8" y="{pad - 12}">{html.escape(y_label)} (peak {_fmt(y1)})</text></svg>'
    )
    return _figure(title, chart_id, svg)


def _figure(title: str, chart_id: str, svg: str) -> str:
    return f'<section class="chart" id="{chart_id}"><h2>{html.escape(title)}</h2>{svg}</section>'


def _empty(title: str, chart_id: str) -> str:
    return _figure(title, chart_id, '<p class="none">nothing to show</p>')


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e9:
        return f"{int(value):,}"
    return f"{value:.4g}" if abs(value) < 1 else f"{value:,.2f}"


def render(figures: Figures) -> str:
    status = figures.status
    saved = status.frontier_cost_usd - status.cost_usd
    share = saved / status.frontier_cost_usd if status.frontier_cost_usd else 0.0
    latency_charts = "".join(
        bar_chart(f"Provider latency, tier {tier}", _latency_items(bins), chart_id=f"latency-{tier}")
        for tier, bins in sorted(figures.latency.items())
    )
    series = throughput_series(figures.per_tenth)
    charts = [
        bar_chart("Tier mix (answered jobs)", figures.tiers.most_common(), chart_id="tier-mix"),
        bar_chart(
            "Cost against the all-frontier cost (USD)",
            [("turnout", status.cost_usd), ("all frontier", status.frontier_cost_usd)],
            chart_id="cost",
        ),
        bar_chart("Cost per tier (USD)", sorted(figures.tier_cost.items()), chart_id="tier-cost"),
        latency_charts,
        bar_chart("Errors by class", figures.errors.most_common(), chart_id="errors"),
        bar_chart("Answers per deployment", figures.answered_by.most_common(), chart_id="deployments"),
        bar_chart("Fallbacks away from each deployment", figures.fallbacks.most_common(), chart_id="fallbacks"),
        line_chart("Throughput over time", series, "seconds", "lines per second", chart_id="throughput"),
    ]
    return _PAGE.format(
        batch=html.escape(status.batch_id),
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        lines=f"{status.submitted:,}",
        answered=f"{status.done - status.failed:,}",
        failed=f"{status.failed:,}",
        cost=f"${status.cost_usd:,.4f}",
        frontier=f"${status.frontier_cost_usd:,.4f}",
        saved=f"{share:.0%}",
        charts="".join(charts),
    )


def throughput_series(per_tenth: Counter[int], points: int = 60) -> list[tuple[float, float]]:
    """(seconds since the first line, lines per second), in about ``points`` buckets of 0.1 s or more."""
    if not per_tenth:
        return []
    first, last = min(per_tenth), max(per_tenth)
    width = max(1, -(-(last - first + 1) // points))  # tenths per bucket
    buckets: Counter[int] = Counter()
    for tenth, count in per_tenth.items():
        buckets[(tenth - first) // width] += count
    rate = 10.0 / width
    series = [(b * width / 10.0, buckets[b] * rate) for b in range(max(buckets) + 1)]
    return series if len(series) > 1 else series + [(width / 10.0, series[0][1])]


def _latency_items(bins: Counter[int]) -> list[tuple[str, float]]:
    labels = [f"≤ {b:g}s" for b in LATENCY_BINS] + [f"> {LATENCY_BINS[-1]:g}s"]
    return [(labels[i], float(bins[i])) for i in range(len(labels)) if bins[i]]


def write_report(ledger: Ledger, batch_id: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(gather(ledger, batch_id)), encoding="utf-8")
    return path


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>turnout batch {batch}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 1400px; color: #0f172a; background: #f8fafc; }}
header {{ display: flex; gap: 1rem; flex-wrap: wrap; margin-bottom: 1.5rem; }}
.tile {{ background: white; border-radius: 8px; padding: .8rem 1.2rem; box-shadow: 0 1px 3px #0002; }}
.tile b {{ display: block; font-size: 1.6rem; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(660px, 1fr)); gap: 1rem; }}
.chart {{ background: white; border-radius: 8px; padding: .5rem 1rem; box-shadow: 0 1px 3px #0002; }}
.chart h2 {{ font-size: 1rem; margin: .3rem 0 .6rem; }}
svg text {{ font-size: 12px; fill: #334155; }}
.none {{ color: #94a3b8; }}
</style></head>
<body>
<h1>turnout batch {batch}</h1>
<p>Generated {generated}.</p>
<header>
<div class="tile">lines<b>{lines}</b></div>
<div class="tile">answered<b>{answered}</b></div>
<div class="tile">failed<b>{failed}</b></div>
<div class="tile">cost<b>{cost}</b></div>
<div class="tile">all-frontier cost<b>{frontier}</b></div>
<div class="tile">saved<b>{saved}</b></div>
</header>
<main>{charts}</main>
</body></html>
"""
