"""Views of results for people: a rich table for the terminal, HTML for Jupyter, a lift plot."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

from rich import box
from rich.table import Table
from rich.text import Text

from loopexp.metrics.definitions import resolve_metric
from loopexp.results import COMPARISON_FIGURES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from loopexp.results import ExperimentResults


def _pct(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:+.1%}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.2g}"


def _num(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{100 * x:+.1f}"


def _lvl(level: float | None) -> str:
    """The interval's level when it is not 95 % (adjusted intervals are wider than 95 %)."""
    if level is None or abs(level - 0.95) < 1e-9:
        return ""
    return f" {100 * level:.3g}%"


def _value(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    try:
        proportion = resolve_metric(metric).kind == "proportion"
    except KeyError:  # a spec-defined metric: shown as a plain number
        proportion = False
    return f"{value:.2%}" if proportion else f"{value:.3f}"


def comparisons_table(
    results: ExperimentResults, metrics: list[str] | None = None, show_probability: bool = True
) -> Table:
    """A compact rich table of challenger-versus-control comparisons (fits 80 columns)."""
    title = f"{results.experiment.name} · iteration {results.experiment.iteration}"
    # Text, not str: a name like "[bold]" or "[/]" is shown literally, never parsed as markup.
    table = Table(
        title=Text(title), box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), pad_edge=False
    )
    table.add_column("metric", no_wrap=True)
    table.add_column("variant", no_wrap=True)
    for col in ("control", "value", "lift (CI)", "p adj."):
        table.add_column(col, justify="right", no_wrap=True)
    if show_probability:
        table.add_column("P(win)", justify="right", no_wrap=True)
    values = {v.id: v.metrics for v in results.variants}
    for c in results.comparisons:
        if metrics and c.metric not in metrics:
            continue
        row = [
            c.metric,
            c.variant,
            _value(c.metric, values[c.control][c.metric].value),
            _value(c.metric, values[c.variant][c.metric].value),
            f"{_pct(c.rel_lift)} ({_num(c.rel_ci_low)}, {_num(c.rel_ci_high)}){_lvl(c.ci_level)}",
            _p(c.p_value_adjusted),
        ]
        if show_probability:
            row.append("–" if c.prob_beat_control is None else f"{c.prob_beat_control:.0%}")
        table.add_row(*row)
    return table


def results_html(results: ExperimentResults) -> str:
    """An HTML summary (decision, reasons, comparison table) for Jupyter and the HTML report."""
    d = results.decision
    frame = results.comparisons_frame()[["metric", "variant", *COMPARISON_FIGURES[1:]]]
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in d.reasons)
    winner = f" → <b>{html.escape(d.winner)}</b>" if d.winner else ""
    return (
        f"<h3>{html.escape(results.experiment.name)} · iteration "
        f"{results.experiment.iteration}</h3>"
        f"<p>Decision: <b>{d.status.value}</b>{winner}. SRM p = {results.srm.p_value:.3g} "
        f"({'ok' if results.srm.ok else 'MISMATCH'}).</p><ul>{reasons}</ul>"
        + frame.to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="–")
    )


def lift_plot(results: ExperimentResults, metric: str | None = None) -> Figure:
    """Relative lift of each challenger with its CI (at its adjusted level) on one metric."""
    from matplotlib.figure import Figure  # noqa: PLC0415 (import matplotlib only when plotting)

    metric = metric or results.decision.primary_metric
    rows = [c for c in results.comparisons if c.metric == metric]
    fig = Figure(figsize=(6, 0.6 + 0.5 * max(len(rows), 1)))
    ax = fig.add_subplot()
    for i, c in enumerate(rows):
        lo, hi = c.rel_ci_low or 0.0, c.rel_ci_high or 0.0
        colour = "tab:green" if c.variant == results.decision.winner else "tab:blue"
        ax.plot([lo, hi], [i, i], color=colour, lw=3)
        ax.plot([c.rel_lift or 0.0], [i], "o", color=colour)
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(range(len(rows)), [c.variant for c in rows])
    ax.set_ylim(-0.5, len(rows) - 0.5)
    ax.xaxis.set_major_formatter(lambda x, _: f"{x:+.0%}")
    ax.set_xlabel(f"relative lift in {metric} vs control (CI at each comparison's level)")
    fig.tight_layout()
    return fig
