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
