"""Statistics on sufficient statistics: tests and CIs, Bayesian summaries, multiplicity, SRM."""

from loopexp.stats.bayes import best_and_loss, chance_to_beat, credible_interval, posteriors
from loopexp.stats.comparison import (
    Intervals,
    ScoreProportions,
    TwoSampleMethod,
    WelchFieller,
    method_for,
)
from loopexp.stats.effect import Effect, relative_lift
from loopexp.stats.heterogeneity import cochran_q
from loopexp.stats.mean import compare_means, mean_and_variance
from loopexp.stats.multiplicity import CORRECTIONS, adjust_pvalues, interval_alphas
from loopexp.stats.proportion import compare_proportions
from loopexp.stats.srm import SRMCheck, srm_check

__all__ = [
    "CORRECTIONS",
    "Effect",
    "Intervals",
    "SRMCheck",
    "ScoreProportions",
    "TwoSampleMethod",
    "WelchFieller",
    "adjust_pvalues",
    "best_and_loss",
    "chance_to_beat",
    "cochran_q",
    "compare_means",
    "compare_proportions",
    "credible_interval",
    "interval_alphas",
    "mean_and_variance",
    "method_for",
    "posteriors",
    "relative_lift",
    "srm_check",
]
