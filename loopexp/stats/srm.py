"""Sample-ratio mismatch: are the observed group sizes what the assignment weights promise."""

from __future__ import annotations

from typing import NamedTuple

from scipy import stats as sps


class SRMCheck(NamedTuple):
    """Result of the SRM check.

    Attributes:
        statistic: Pearson χ² goodness-of-fit statistic (df = groups - 1).
        p_value: its p-value; a tiny value means the split is broken and results can't be trusted.
        ok: ``p_value >= alpha``.
        expected: expected share per group.
        observed: observed count per group.
    """

    statistic: float
    p_value: float
    ok: bool
    expected: dict[str, float]
    observed: dict[str, int]


def srm_check(
    observed: dict[str, int], expected: dict[str, float], alpha: float = 0.001
) -> SRMCheck:
    """χ² goodness-of-fit of observed counts against expected shares (as gbstats ``check_srm``)."""
    groups = list(expected)
    unknown = set(observed) - set(groups)
    if unknown:
        raise ValueError(
            f"observed groups {sorted(unknown)} are not in the expected shares {groups}"
        )
    counts = [observed.get(g, 0) for g in groups]
    total = sum(counts)
    share_sum = sum(expected.values())
    f_exp = [total * expected[g] / share_sum for g in groups]
    if total == 0:
        return SRMCheck(0.0, 1.0, True, dict(expected), dict(zip(groups, counts, strict=True)))
    statistic, p_value = sps.chisquare(counts, f_exp)
    return SRMCheck(
        float(statistic),
        float(p_value),
        bool(p_value >= alpha),
        dict(expected),
        dict(zip(groups, counts, strict=True)),
    )


#: A period is checked only when every group expects at least this many recipients in it (the
#: chi-square approximation's usual condition).
MIN_EXPECTED_PER_GROUP = 5.0


def srm_by_period(
    counts: dict[str, dict[str, int]], expected: dict[str, float], alpha: float = 0.001
) -> list[tuple[str, SRMCheck]]:
    """The SRM check of each period (day of enrolment, send batch), at ``alpha / k``.

    ``counts`` maps period → group → recipients. A split broken on one day can hide in the
    totals of a long flow; each period is checked on its own, Bonferroni over the ``k`` periods
    checked so that a sound split fails no period with probability ``1 - alpha`` or more.
    Periods too small for the chi-square approximation are left out.
    """
    share_sum = sum(expected.values())
    usable = {
        period: groups
        for period, groups in counts.items()
        if sum(groups.values()) * min(expected.values()) / share_sum >= MIN_EXPECTED_PER_GROUP
    }
    level = alpha / max(1, len(usable))
    return [
        (period, srm_check({g: n for g, n in groups.items() if g in expected}, expected, level))
        for period, groups in sorted(usable.items())
    ]
