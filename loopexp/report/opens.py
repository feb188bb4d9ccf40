"""The opens-after-Apple-MPP section of report.html, in plain words (issue 28)."""

from __future__ import annotations

import html
from typing import Any

from loopexp.analysis.results import ExperimentResults


def _pct(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "unbounded"
    return f"{value * 100:+.1f} %" if signed else f"{value * 100:.0f} %"


def _challenger(c: dict[str, Any], control: str) -> str:
    name, ctl = html.escape(str(c["variant"])), html.escape(control)
    lines = []
    np_ = c.get("non_proxy")
    if np_ and np_.get("rel_lift") is not None:
        lines.append(
            f"Among readers whose opens we can see (a human open seen in earlier campaigns, "
            f"{np_['n']:,} recipients), {name} changed human opens by {_pct(np_['rel_lift'])} "
            f"versus {ctl} (95 % CI {_pct(np_['rel_ci_low'])} to {_pct(np_['rel_ci_high'])})."
        )
    else:
        lines.append(
            f"{name} vs {ctl}: no readers with visible opens on both sides, so no open effect "
            "can be stated (this is not evidence of no difference)."
        )
    whole = c.get("whole_audience")
    if whole and whole.get("rel_lift") is not None:
        lines.append(
            f"On the whole audience the human-open lift is {_pct(whole['rel_lift'])}: diluted, "
            "because Apple's proxy hides the human opens of its readers."
        )
    b = c.get("bounds")
    if b and b.get("diff_low") is not None:
        lines.append(
            f"Without any assumption about the {_pct(b['masked_share'], False)} of recipients "
            f"with only machine opens, the true human-open difference lies between "
            f"{b['diff_low'] * 100:+.1f} and {b['diff_high'] * 100:+.1f} percentage points."
        )
    lee = c.get("lee")
    if lee and lee.get("diff_low") is not None:
        lines.append(
            f"If {name} changes no one's chance of being seen and Apple readers respond like the "
            "readers we can see (the data cannot check this), the difference lies between "
            f"{lee['diff_low'] * 100:+.1f} and {lee['diff_high'] * 100:+.1f} points (Lee bounds; "
            f"95 % CI {lee['ci_low'] * 100:+.1f} to {lee['ci_high'] * 100:+.1f})."
        )
    return "<li>" + " ".join(lines) + "</li>"


def opens_html(results: ExperimentResults) -> str:
    """Plain-words MPP section: non-proxy effect, diluted effect, bounds, machine-open share."""
    opens = results.opens
    if not opens:
        return ""
    control = str(opens["control"])
    items = "".join(_challenger(c, control) for c in opens["challengers"])
    shares = ", ".join(
        f"{html.escape(v)} {_pct(s, False)}" if s is not None else f"{html.escape(v)} no opens"
        for v, s in opens["machine_open_share"].items()
    )
    return (
        "<h4>Opens after Apple Mail Privacy Protection</h4>"
        f"<p>Share of opens that are machine opens (not people): {shares}. Raw open rates "
        "include them; the figures below do not. Clicks remain the decision metric.</p>"
        f"<ul>{items}</ul>"
        + (
            f"<p><b>{html.escape(jump)}</b></p>"
            if (jump := opens.get("machine_share_jump"))
            else ""
        )
    )
