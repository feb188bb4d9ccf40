"""Statistics on sufficient statistics: tests and CIs, Bayesian summaries, multiplicity, SRM."""

from loopexp.stats.bayes import chance_to_beat, credible_interval
from loopexp.stats.effect import Effect, relative_lift
from loopexp.stats.mean import compare_means, mean_and_variance
from loopexp.stats.multiplicity import CORRECTIONS, adjust_pvalues
from loopexp.stats.proportion import compare_proportions
from loopexp.stats.srm import SRMCheck, srm_check

__all__ = [
    "CORRECTIONS",
    "Effect",
    "SRMCheck",
    "adjust_pvalues",
    "chance_to_beat",
    "compare_means",
    "compare_proportions",
    "credible_interval",
    "mean_and_variance",
    "relative_lift",
    "srm_check",
]
