"""Server-rendered HTML for the dashboard: no JavaScript, no build step, no template engine.

Every dynamic value goes through ``html.escape`` (``_e``); nothing from events is ever
inserted raw. Pages refresh themselves every 30 s with a meta tag. The cost chart is inline
SVG (stacked bars per day) so it works in any browser and in screenshots.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from urllib.parse import quote

from app.audit.events import AuditEvent
from app.audit.render import RunSummary
from app.dashboard.data import CostPoint, DashboardData

__all__ = ["render_main", "render_message", "render_run"]

_CSS = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#f6f8fa;--ok:#1a7f37;--bad:#cf222e;
--warn:#9a6700;--info:#0969da}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",
Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#24292f;color:#fff;padding:12px 24px;display:flex;gap:16px;align-items:baseline}
header h1{font-size:18px;margin:0}header span{color:#c9d1d9;font-size:12px}
header a{color:#fff;text-decoration:none}
main{padding:16px 24px;display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));
gap:16px}
section{background:#fff;border:1px solid var(--line);border-radius:6px;padding:12px 16px;
overflow-x:auto}
section.wide{grid-column:1/-1}
h2{font-size:15px;margin:0 0 8px}h2 small{color:var(--muted);font-weight:normal}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid var(--line);vertical-align:top;white-space:nowrap}
td.wrap,span.wrap{white-space:normal}th{color:var(--muted);font-weight:600;font-size:12px}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:600;
border:1px solid currentColor}
.ok{color:var(--ok)}.bad{color:var(--bad)}.warn{color:var(--warn)}.info{color:var(--info)}
.muted{color:var(--muted)}.empty{color:var(--muted);font-style:italic}
a{color:var(--info)}code{font-size:12px}
nav.tabs a{margin-right:12px}nav.tabs a.on{font-weight:700;color:var(--fg);text-decoration:none}
"""

_STATUS_CLASS = {
    "succeeded": "ok",
    "passed": "ok",
    "approved": "ok",
    "closed": "ok",
    "failed": "bad",
    "aborted": "bad",
    "rejected": "bad",
    "compensation_failed": "bad",
    "open": "bad",
    "running": "info",
    "pending": "warn",
}
_PALETTE = ("#0969da", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#1b7c83", "#bc4c00")


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


_CHECK_CLASS = {"success": "ok", "failure": "bad", "action_required": "warn"}


def _checks(checks: tuple[tuple[str, str], ...]) -> str:
    """The pull request's check verdicts, one small badge each (``policy: failure``)."""
    return "".join(
        f' <span class="badge {_CHECK_CLASS.get(conclusion, "muted")}" title="{_e(name)}">'
        f"{_e(name.removeprefix('plangate/'))}: {_e(conclusion)}</span>"
        for name, conclusion in checks
    )


def _badge(status: str) -> str:
    return f'<span class="badge {_STATUS_CLASS.get(status, "muted")}">{_e(status)}</span>'


def _ago(then: datetime, now: datetime) -> str:
    seconds = (now - then).total_seconds()
    if seconds < 90:
        return f"{max(int(seconds), 0)}s ago"
    if seconds < 5400:
        return f"{int(seconds // 60)}m ago"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(seconds // 86400)}d ago"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _page(title: str, body: str, *, refresh: bool = True) -> str:
    meta = '<meta http-equiv="refresh" content="30">' if refresh else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        '<header><h1><a href="./">Plangate</a></h1>'
        f"<span>{_e(title)}</span></header>{body}</body></html>"
    )


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    rows = list(rows)
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _run_link(run: str, base: str) -> str:
    return f'<a href="{_e(base)}runs/{_e(quote(run, safe=""))}">{_e(run)}</a>'


def cost_chart(points: Sequence[CostPoint], *, now: datetime, days: int = 14) -> str:
    """Stacked bars of cost per day, one colour per key (the 6 largest; the rest is 'other')."""
    if not points:
        return '<p class="empty">no cost recorded in this period</p>'
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for p in points:
        totals[p.key] += p.usd
    top = [k for k, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:6]]
    keys = top + (["other"] if len(totals) > len(top) else [])
    start = (now - timedelta(days=days - 1)).date()
    day_list = [start + timedelta(days=i) for i in range(days)]
    stacks: dict[object, dict[str, Decimal]] = {d: defaultdict(Decimal) for d in day_list}
    for p in points:
        if p.day in stacks:
            stacks[p.day][p.key if p.key in top else "other"] += p.usd
    peak = max((sum(s.values(), Decimal(0)) for s in stacks.values()), default=Decimal(0))
    peak = peak or Decimal(1)
    width, height, left, bottom, top_pad = 720, 220, 56, 28, 12
    plot_h = height - bottom - top_pad
    bar_w = (width - left - 8) / days
    parts = [
        f'<svg role="img" aria-label="cost per day" viewBox="0 0 {width} {height + 24}" '
        f'width="100%" style="max-width:{width}px" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{height - bottom}" stroke="#d0d7de"/>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
        'stroke="#d0d7de"/>',
        f'<text x="{left - 6}" y="{top_pad + 4}" font-size="11" text-anchor="end" '
        f'fill="#656d76">${_e(f"{peak:.2f}")}</text>',
        f'<text x="{left - 6}" y="{height - bottom}" font-size="11" text-anchor="end" '
        'fill="#656d76">$0</text>',
    ]
    for i, day in enumerate(day_list):
        x = left + 4 + i * bar_w
        y = float(height - bottom)
        for k_index, key in enumerate(keys):
            usd = stacks[day].get(key, Decimal(0))
            if not usd:
                continue
            h = float(usd / peak) * plot_h
            y -= h
            color = _PALETTE[k_index % len(_PALETTE)]
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 4:.1f}" height="{h:.1f}" '
                f'fill="{color}"><title>{_e(day)} {_e(key)}: ${_e(f"{usd:.2f}")}</title></rect>'
            )
        if i % 2 == 0:
            parts.append(
                f'<text x="{x + (bar_w - 4) / 2:.1f}" y="{height - bottom + 14}" font-size="10" '
                f'text-anchor="middle" fill="#656d76">{_e(day.strftime("%m-%d"))}</text>'
            )
    lx = left
    for k_index, key in enumerate(keys):
        color = _PALETTE[k_index % len(_PALETTE)]
        parts.append(
            f'<rect x="{lx}" y="{height + 6}" width="10" height="10" fill="{color}"/>'
            f'<text x="{lx + 14}" y="{height + 15}" font-size="11" fill="#1f2328">'
            f"{_e(key)} ${_e(f'{totals[key] if key in totals else Decimal(0):.2f}')}</text>"
        )
        lx += 24 + 7 * (len(key) + 8)
    parts.append("</svg>")
    return "".join(parts)


def render_main(data: DashboardData, *, cost_by: str = "team", base: str = "./") -> str:
    now = data.now
    pending = _table(
        ("plan", "team", "env", "proposed by", "when", "approval"),
        (
            (
                f"<strong>{_e(p.plan_id)}</strong>"
                + (f' <span class="muted">{_e(p.pull_request)}</span>' if p.pull_request else ""),
                _e(p.team or "-"),
                _e(p.environment or "-"),
                _e(p.proposed_by),
                _e(_ago(p.proposed_at, now)),
                _badge(p.approval_status)
                + (
                    f' <span class="muted">{p.approvals_have}/{p.approvals_need}</span>'
                    if p.approvals_have is not None and p.approvals_need is not None
                    else ""
                )
                + _checks(p.checks),
            )
            for p in data.pending
        ),
        "no plans waiting",
    )
    runs = _table(
        ("run", "plan", "env", "status", "started", "duration", "events"),
        (
            (
                _run_link(r.correlation_id, base),
                f"<strong>{_e(r.plan_id or '-')}</strong>",
                _e(r.environment or "-"),
                _badge(r.status),
                _e(_ago(r.started, now)),
                _e(_duration(r.duration_seconds)),
                _e(r.events),
            )
            for r in data.runs
        ),
        "no runs in this period",
    )
    failing = _table(
        ("plan", "step", "failures", "last", "error", "run"),
        (
            (
                _e(f.plan_id or "-"),
                f'<strong class="bad">{_e(f.step)}</strong>',
                _e(f.failures),
                _e(_ago(f.last_failure, now)),
                f'<span class="wrap">{_e(f.last_error[:120])}</span>',
                _run_link(f.last_run, base),
            )
            for f in data.failing_steps
        ),
        "no failing steps",
    )
    breakers = _table(
        ("service", "state", "since", "run"),
        (
            (_e(b.service), _badge("open"), _e(_ago(b.since, now)), _run_link(b.run, base))
            for b in data.open_breakers
        ),
        "all breakers closed",
    )
    canaries = _table(
        ("run", "plan", "env", "result", "when", "detail"),
        (
            (
                _run_link(c.run, base),
                _e(c.plan_id or "-"),
                _e(c.environment or "-"),
                _badge(c.outcome),
                _e(_ago(c.at, now)),
                f'<span class="wrap">{_e(c.detail[:120])}</span>',
            )
            for c in data.canaries
        ),
        "no canary results",
    )
    if data.dead_letters is None:
        dead = '<p class="empty">no delivery inbox connected</p>'
    else:
        dead = _table(
            ("delivery", "event", "attempts", "when", "last error"),
            (
                (
                    f"<code>{_e(d.delivery_id)}</code>",
                    _e(d.event),
                    _e(d.attempts),
                    _e(_ago(d.at, now)),
                    f'<span class="wrap">{_e(d.last_error[:160])}</span>',
                )
                for d in data.dead_letters
            ),
            "no dead-lettered deliveries",
        )
    dims = ("team", "plan", "environment")
    cost_by = cost_by if cost_by in dims else "team"
    tabs = "".join(
        f'<a href="?cost_by={d}" class="{"on" if d == cost_by else ""}">by {d}</a>' for d in dims
    )
    chart = cost_chart(data.cost_by.get(cost_by, []), now=now)
    body = (
        "<main>"
        f"<section><h2>Pending plans <small>{len(data.pending)}</small></h2>{pending}</section>"
        f"<section><h2>Recent runs <small>{len(data.runs)}</small></h2>{runs}</section>"
        f"<section><h2>Failing steps</h2>{failing}</section>"
        f"<section><h2>Open breakers</h2>{breakers}</section>"
        f"<section><h2>Canary results</h2>{canaries}</section>"
        f"<section><h2>Dead-lettered deliveries</h2>{dead}</section>"
        f'<section class="wide"><h2>Cost, last 14 days</h2><nav class="tabs">{tabs}</nav>'
        f"{chart}</section>"
        "</main>"
    )
    return _page(f"dashboard · {now:%Y-%m-%d %H:%M} UTC", body)


def render_run(summary: RunSummary, events: Sequence[AuditEvent], *, base: str = "../") -> str:
    start = events[0].timestamp
    rows = []
    for e in events:
        status = e.type.split(".", 1)[1] if "." in e.type else e.type
        detail = ", ".join(f"{k}={v}" for k, v in sorted(e.payload.items()))
        rows.append(
            (
                _e(e.seq),
                _e(f"+{(e.timestamp - start).total_seconds():.1f}s"),
                _e(e.type)
                if e.type.startswith(("run.", "plan."))
                else _badge(status) + f' <span class="muted">{_e(e.type.split(".", 1)[0])}</span>',
                f"<strong>{_e(e.step or '')}</strong>",
                _e(str(e.actor)),
                f'<span class="wrap">{_e(detail[:200])}</span>',
            )
        )
    timeline = _table(("seq", "time", "event", "step", "actor", "detail"), rows, "no events")
    facts = _table(
        ("plan", "digest", "team", "env", "status", "started (UTC)", "duration", "failed steps"),
        [
            (
                f"<strong>{_e(summary.plan_id or '-')}</strong>",
                f"<code>{_e((summary.plan_digest or '-')[:23])}</code>",
                _e(summary.team or "-"),
                _e(summary.environment or "-"),
                _badge(summary.status),
                _e(f"{summary.started:%Y-%m-%d %H:%M:%S}"),
                _e(_duration(summary.duration_seconds)),
                f'<span class="bad">{_e(", ".join(summary.failed_steps) or "-")}</span>',
            )
        ],
        "",
    )
    body = (
        "<main>"
        f'<section class="wide"><h2>Run {_e(summary.correlation_id)}</h2>{facts}</section>'
        f'<section class="wide"><h2>Timeline <small>{len(events)} events</small></h2>'
        f"{timeline}</section></main>"
    )
    return _page(f"run {summary.correlation_id}", body, refresh=summary.status == "running")


def render_message(title: str, message: str) -> str:
    body = f'<main><section class="wide"><h2>{_e(title)}</h2><p>{_e(message)}</p></section></main>'
    return _page(title, body, refresh=False)
