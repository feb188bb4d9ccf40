"""The closed-loop report for people: the campaign's history as an HTML page, frames and a plot.

Renders the records of :mod:`loopexp.learn.history` (read back from MLflow by
:mod:`loopexp.track.closed_loop`); every text from specs or data goes through ``html.escape``.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

from loopexp.learn.history import KPIS, ClosedLoopReport
from loopexp.learn.shrinkage import Lift
from loopexp.report.views import share_table

# --- formatting and frames ---------------------------------------------------------------------


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:+.{digits}%}"


def _rate(x: float | None, metric: str) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.2f}" if metric == "revenue_per_delivered" else f"{x:.3%}"


def _money(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:+,.0f}"


def _interval(lift: Lift) -> str:
    if lift.value is None:
        return "—"
    level = f" ({lift.level:.1%} CI)" if lift.level else ""
    return f"{_pct(lift.value)} [{_pct(lift.low)}, {_pct(lift.high)}]{level}"


def trend_plot(report: ClosedLoopReport) -> Any:
    """The KPI trend by iteration (everyone mailed, and the control) as a matplotlib figure."""
    import matplotlib.pyplot as plt  # noqa: PLC0415 (plots only when rendering)

    its = [r.iteration for r in report.iterations]
    fig, axes = plt.subplots(2, 4, figsize=(12, 5))
    for ax, (metric, label) in zip(axes.flat, KPIS.items(), strict=False):
        ax.plot(its, [r.kpis.get(metric) for r in report.iterations], "o-", label="all mailed")
        ax.plot(
            its, [r.control_kpis.get(metric) for r in report.iterations], "s--", label="control"
        )
        ax.set_title(label, fontsize=9)
        ax.set_xticks(its)
    axes.flat[-1].axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"KPI trend by iteration: {report.campaign}", fontsize=10)
    fig.tight_layout()
    return fig


def _trend_png(report: ClosedLoopReport) -> str:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig = trend_plot(report)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def decisions_frame(report: ClosedLoopReport) -> Any:
    """One row per iteration: decision, winner, the lift with its interval, vetoes, lineage."""
    import pandas as pd  # noqa: PLC0415

    return pd.DataFrame(
        [
            {
                "iteration": r.iteration,
                "control": r.control,
                "decision": r.status,
                "winner / best": r.winner
                or (f"({r.best_challenger})" if r.best_challenger else ""),
                f"lift of {r.primary_metric}": _interval(r.lift),
                "vetoed": ", ".join(r.vetoed),
                "lineage": "ok" if r.lineage_ok else "broken",
            }
            for r in report.iterations
        ]
    ).set_index("iteration")


def links_frame(report: ClosedLoopReport, iteration: int | None = None) -> Any:
    """Links × variants of one iteration (default: the latest with link data): share of clicks.

    Each cell is the link's share of the variant's human clicks; the control comes first and
    links are ordered by its share, so the hardly-clicked ones sit at the bottom. Empty when no
    iteration has link data.
    """
    with_links = [r for r in report.iterations if r.link_clicks]
    if iteration is not None:
        with_links = [r for r in with_links if r.iteration == iteration]
    if not with_links:
        return share_table({}, None)
    record = with_links[-1]
    return share_table(record.link_clicks or {}, record.control)


def shrinkage_frame(report: ClosedLoopReport) -> Any:
    """One row per primary comparison: raw and shrunk lift with intervals."""
    import pandas as pd  # noqa: PLC0415

    return pd.DataFrame(
        [
            {
                "iteration": s.iteration,
                "challenger": s.variant,
                "shipped": s.shipped,
                "raw lift": _interval(s.raw),
                "shrunk lift": _interval(s.shrunk),
            }
            for s in report.shrunk
        ]
    )


# --- the page ----------------------------------------------------------------------------------


def _decisions_html(report: ClosedLoopReport) -> list[str]:
    e = html.escape
    parts = [
        "<h2>Decisions</h2><table><tr><th>iteration</th><th>experiment</th>"
        "<th>control</th><th>decision</th><th>winner / best challenger</th>"
        "<th>lift of the primary metric</th><th>guardrail vetoes</th>"
        "<th>lineage</th></tr>"
    ]
    for r in report.iterations:
        who = r.winner or (f"({r.best_challenger})" if r.best_challenger else "—")
        lineage = "ok" if r.lineage_ok else f"parent {r.parent_run_id or 'missing'}: broken"
        parts.append(
            f"<tr><td>{r.iteration}</td><td>{e(r.name)}</td><td>{e(r.control)}</td>"
            f"<td>{e(r.status)}</td><td>{e(who)}</td>"
            f"<td>{e(r.primary_metric)}: {e(_interval(r.lift))}</td>"
            f"<td>{e(', '.join(r.vetoed) or '—')}</td><td>{e(lineage)}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _trend_html(report: ClosedLoopReport, plot: bool) -> list[str]:
    e = html.escape
    parts = ["<h2>KPI trend (everyone mailed)</h2><table><tr><th>iteration</th>"]
    parts += [f"<th>{e(label)}</th>" for label in KPIS.values()]
    parts.append("</tr>")
    for r in report.iterations:
        cells = "".join(f"<td>{e(_rate(r.kpis.get(k), k))}</td>" for k in KPIS)
        version = f" (flow version {e(r.flow_version)})" if r.flow_version else ""
        parts.append(f"<tr><td>{r.iteration}{version}</td>{cells}</tr>")
    parts.append("</table>")
    if plot:
        parts.append(f'<img alt="KPI trend" src="data:image/png;base64,{_trend_png(report)}"/>')
    return parts


def _earned_html(report: ClosedLoopReport) -> list[str]:
    e = html.escape
    parts = ["<h2>What the loop earned</h2><ul>"]
    parts.append(
        f"<li>Cumulative lift of the current control over the first (product of the shipped "
        f"winners' lifts): raw {e(_interval(report.cumulative))}; shrunk "
        f"{e(_interval(report.cumulative_shrunk))}</li>"
    )
    for r in report.iterations:
        inc = r.incremental_revenue
        if inc is not None:
            parts.append(
                f"<li>Iteration {r.iteration}: revenue the mailing added over the no-mail holdout "
                f"{e(_money(inc.total))} ({inc.level:.0%} CI {e(_money(inc.low))} to "
                f"{e(_money(inc.high))}; {inc.per_recipient:+.3f} per recipient, "
                f"{e(_pct(inc.rel_lift))} over not mailing)</li>"
            )
        if r.policy_gain:  # issue 27: a deployed policy's projected vs realised gain
            parts.append(f"<li>Iteration {r.iteration}: {e(r.policy_gain)}</li>")
    parts.append("</ul>")
    return parts


def _shrinkage_html(report: ClosedLoopReport) -> list[str]:
    e = html.escape
    parts = [
        "<h2>Winner's curse: raw and shrunk lifts</h2><p>Empirical-Bayes prior on the log lift "
        f"from the campaign's {report.prior_tests} primary comparison(s): "
        + (
            f"mean {_pct(math.expm1(report.prior_mean))}, spread (sd of log lift) "
            f"{report.prior_sd:.3f}."
            if report.prior_mean is not None and report.prior_sd is not None
            else "not enough tests yet."
        )
        + "</p><table><tr><th>iteration</th><th>challenger</th><th>shipped</th><th>raw</th>"
        "<th>shrunk</th></tr>"
    ]
    for s in report.shrunk:
        parts.append(
            f"<tr><td>{s.iteration}</td><td>{e(s.variant)}</td><td>{'yes' if s.shipped else ''}"
            f"</td><td>{e(_interval(s.raw))}</td><td>{e(_interval(s.shrunk))}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _send_time_html(report: ClosedLoopReport) -> list[str]:
    windows = [r for r in report.iterations if r.send_windows]
    if not windows:
        return []
    parts = [
        "<h2>Send time: recommended window per segment</h2><table>"
        "<tr><th>iteration</th><th>windows</th></tr>"
    ]
    for r in windows:
        text = ", ".join(f"{k} {v}" for k, v in sorted(r.send_windows.items()))
        parts.append(f"<tr><td>{r.iteration}</td><td>{html.escape(text)}</td></tr>")
    parts.append("</table>")
    return parts


def _links_html(report: ClosedLoopReport) -> list[str]:
    e = html.escape
    links = [r for r in report.iterations if r.link_clicks]
    parts = ["<h2>Link click distribution</h2>"]
    if not links:
        return [*parts, "<p>Not available in these results.</p>"]
    parts.append("<p>Each link's share of the variant's human clicks (bots excluded).</p>")
    for r in links:
        frame = links_frame(report, r.iteration)
        head = "".join(f"<th>{e(v)}</th>" for v in frame.columns)
        rows = "".join(
            f"<tr><td>{e(link)}</td>" + "".join(f"<td>{x:.1%}</td>" for x in row) + "</tr>"
            for link, row in zip(frame.index, frame.to_numpy(), strict=True)
        )
        parts.append(
            f"<h3>Iteration {r.iteration}</h3><table><tr><th>link</th>{head}</tr>{rows}</table>"
        )
    return parts


def report_html(report: ClosedLoopReport, plot: bool = True) -> str:
    """The report as a self-contained HTML page (all text escaped)."""
    e = html.escape
    parts = [
        f"<h1>Closed-loop report: {e(report.campaign)}</h1>",
        f"<p>{len(report.iterations)} iteration(s) read back from MLflow "
        f"({e(report.tracking_uri)}).</p>",
        *_decisions_html(report),
        *_trend_html(report, plot),
        *_earned_html(report),
        *_shrinkage_html(report),
        *_send_time_html(report),
        *_links_html(report),
        "<h2>What to test next</h2><ul>",
        *[f"<li>{e(step)}</li>" for step in report.next_steps],
        "</ul>",
    ]
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in report.notes))
        parts.append("</ul>")
    body = "".join(parts)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{e(report.campaign)} · closed-loop report</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ddd}"
        f"</style></head><body>{body}</body></html>"
    )


def write_html(report: ClosedLoopReport, path: str | Path, plot: bool = True) -> Path:
    """Write the report's HTML page; return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(report, plot), encoding="utf-8")
    return path
