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
from loopexp.report.plain import decision_words, metric_words
from loopexp.report.views import share_table

# --- formatting and frames ---------------------------------------------------------------------


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:+.{digits}%}"


def _rate(x: float | None, metric: str) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.2f}" if metric == "revenue_per_delivered" else f"{x:.1%}"


def _money(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:+,.0f}"


def _interval(lift: Lift) -> str:
    if lift.value is None:
        return "—"
    level = f" ({lift.level:.1%} CI)" if lift.level else ""
    return f"{_pct(lift.value)} [{_pct(lift.low)}, {_pct(lift.high)}]{level}"


#: Iterations up to which the trend plot has a tick per iteration (more: a few whole numbers).
MAX_TICKS = 12


def trend_plot(report: ClosedLoopReport) -> Any:
    """The KPI trend by iteration (everyone mailed, and the control) as a matplotlib figure.

    A bare ``Figure``, not pyplot's: a notebook shows it once (as the cell's value), where a
    pyplot figure is shown a second time by the inline backend.
    """
    from matplotlib.figure import Figure  # noqa: PLC0415 (plots only when rendering)
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    its = [r.iteration for r in report.iterations]
    fig = Figure(figsize=(12, 5))
    axes = fig.subplots(2, 4)
    for ax, (metric, label) in zip(axes.flat, KPIS.items(), strict=False):
        ax.plot(its, [r.kpis.get(metric) for r in report.iterations], "o-", label="all mailed")
        ax.plot(
            its, [r.control_kpis.get(metric) for r in report.iterations], "s--", label="control"
        )
        ax.set_title(label, fontsize=9)
        if len(its) <= MAX_TICKS:
            ax.set_xticks(its)
        else:  # a tick per iteration: 1,000 iterations took minutes to draw (issue 25)
            ax.xaxis.set_major_locator(MaxNLocator(MAX_TICKS, integer=True))
    axes.flat[-1].axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"KPI trend by iteration: {report.campaign}", fontsize=10)
    fig.tight_layout()
    return fig


def _trend_png(report: ClosedLoopReport) -> str:
    buffer = io.BytesIO()
    trend_plot(report).savefig(buffer, format="png", dpi=90)
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


def _who(name: str | None, subjects: dict[str, str]) -> str:
    """A variant id with its subject line, when known."""
    if not name:
        return "—"
    return f"{name} (“{subjects[name]}”)" if subjects.get(name) else name


def _decisions_html(
    report: ClosedLoopReport, subjects: dict[int, dict[str, str]] | None = None
) -> list[str]:
    e = html.escape
    parts = [
        "<h2>Decisions</h2><table><tr><th>test</th><th>email to beat</th><th>decision</th>"
        "<th>winner, or best challenger</th><th>change</th><th>vetoed (drove people away)</th>"
        "</tr>"
    ]
    for r in report.iterations:
        named = (subjects or {}).get(r.iteration, {})
        who = _who(r.winner or r.best_challenger, named)
        who = who if r.winner or who == "—" else f"({who})"
        change = (
            "—"
            if r.lift.value is None
            else f"{_pct(r.lift.value)} {metric_words(r.primary_metric)} "
            f"(likely {_pct(r.lift.low)} to {_pct(r.lift.high)})"
        )
        parts.append(
            f"<tr><td>{r.iteration}</td><td>{e(_who(r.control, named))}</td>"
            f"<td>{e(decision_words(r.status))}</td><td>{e(who)}</td><td>{e(change)}</td>"
            f"<td>{e(', '.join(r.vetoed) or '—')}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _lineage_html(report: ClosedLoopReport) -> list[str]:
    e = html.escape
    parts = ["<h3>Lineage (each test's parent run)</h3><table><tr><th>test</th><th>experiment"]
    parts.append("</th><th>MLflow run</th><th>parent</th></tr>")
    for r in report.iterations:
        lineage = "ok" if r.lineage_ok else f"parent {r.parent_run_id or 'missing'}: broken"
        parts.append(
            f"<tr><td>{r.iteration}</td><td>{e(r.name)}</td><td>{e(r.run_id)}</td>"
            f"<td>{e(lineage)}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _trend_html(report: ClosedLoopReport, plot: bool) -> list[str]:
    e = html.escape
    parts = ["<h2>How the emails did, test by test (everyone mailed)</h2><table><tr><th>test</th>"]
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
    now, first = report.cumulative_shrunk, report.iterations[0] if report.iterations else None
    if now.value is not None and first is not None:
        parts.append(
            f"<li>Today's email gets {e(_pct(now.value))} {e(metric_words(first.primary_metric))}"
            f" compared with the first test's email (likely {e(_pct(now.low))} to "
            f"{e(_pct(now.high))}, after allowing for winners that were partly luck).</li>"
        )
    else:
        parts.append("<li>No winner was sent yet: nothing earned over the first email.</li>")
    for r in report.iterations:
        inc = r.incremental_revenue
        if inc is not None:
            parts.append(
                f"<li>Test {r.iteration}: revenue the mailing added over the no-mail holdout "
                f"(the people we did not mail): {e(_money(inc.total))} (likely "
                f"{e(_money(inc.low))} to {e(_money(inc.high))}; {inc.per_recipient:+.2f} per "
                "recipient).</li>"
            )
        if r.policy_gain:  # issue 27: a deployed policy's projected vs realised gain
            parts.append(f"<li>Iteration {r.iteration}: {e(r.policy_gain)}</li>")
    parts.append("</ul>")
    return parts


def _cumulative_html(report: ClosedLoopReport) -> list[str]:
    e = html.escape
    return [
        "<h3>Cumulative lift</h3><p>Cumulative lift of the current control over the first "
        f"(product of the shipped winners' lifts): raw {e(_interval(report.cumulative))}; shrunk "
        f"{e(_interval(report.cumulative_shrunk))}. Incremental revenue is measured against the "
        "no-mail holdout (intent to treat).</p>"
    ]


def _shrinkage_html(report: ClosedLoopReport) -> list[str]:
    e = html.escape
    parts = [
        "<h3>Winner's curse: raw and shrunk lifts</h3><p>Empirical-Bayes prior on the log lift "
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


def _next_html(report: ClosedLoopReport, subjects: dict[int, dict[str, str]] | None) -> list[str]:
    """What to test next, for a marketer: from the latest test's decision."""
    e = html.escape
    last = report.iterations[-1]
    named = (subjects or {}).get(last.iteration, {})
    steps = {
        "ship": f"Send {_who(last.winner, named)} from now on; it is the email to beat next.",
        "keep_testing": "The last test was not clear yet: it runs again, to more people.",
        "no_difference": "The last challengers made no clear difference: keep the current email "
        "and try a bolder idea (another offer, a different tone).",
        "guardrail_veto": "Keep the current email: the challenger drove people away.",
        "invalid_srm": "Don't act on the last test: the recipients were not split as planned. "
        "Ask whoever sends the emails to check the send, then run it again.",
    }
    lines = [steps.get(last.status, decision_words(last.status))]
    if last.next_spec.startswith("none"):
        lines.append(
            "No idea is left to test: write one or two new ones (a subject line, an offer, a "
            f"preheader) to try against {_who(last.winner or last.control, named)} and hand them "
            "to whoever runs the tests."
        )
    if last.vetoed:
        lines.append(f"Don't reuse the approach of {', '.join(last.vetoed)}: it drove people away.")
    return [
        "<h2>What to test next</h2><ul>",
        *[f"<li>{e(line)}</li>" for line in lines],
        "</ul>",
    ]


def report_html(
    report: ClosedLoopReport, plot: bool = True, subjects: dict[int, dict[str, str]] | None = None
) -> str:
    """The report as a self-contained HTML page in plain words (all text escaped).

    ``subjects`` (per test, variant id → subject line) puts each subject line beside its id.
    Statistical terms (raw and shrunk lifts, the prior, lineage) and the steps for whoever edits
    the specs are in the appendix.
    """
    e = html.escape
    parts = [
        f"<h1>Closed-loop report: {e(report.campaign)}</h1>",
        f"<p>{len(report.iterations)} test(s) so far.</p>",
        *_decisions_html(report, subjects),
        *(_next_html(report, subjects) if report.iterations else []),
        *_trend_html(report, plot),
        *_earned_html(report),
        *_send_time_html(report),
        *_links_html(report),
        "<details><summary>Appendix: statistical details and steps for the data team</summary>",
        f"<p>Read back from MLflow ({e(report.tracking_uri)}).</p>",
        *_cumulative_html(report),
        *_shrinkage_html(report),
        *_lineage_html(report),
        "<h3>For whoever edits the specs</h3><ul>",
        *[f"<li>{e(step)}</li>" for step in report.next_steps],
        "</ul>",
    ]
    if report.notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{e(n)}</li>" for n in report.notes))
        parts.append("</ul>")
    parts.append("</details>")
    body = "".join(parts)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{e(report.campaign)} · closed-loop report</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ddd}"
        f"</style></head><body>{body}</body></html>"
    )


def write_html(
    report: ClosedLoopReport,
    path: str | Path,
    plot: bool = True,
    subjects: dict[int, dict[str, str]] | None = None,
) -> Path:
    """Write the report's HTML page; return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(report, plot, subjects), encoding="utf-8")
    return path
