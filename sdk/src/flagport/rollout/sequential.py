"""The always-valid one-sided test behind ``--vs-control`` (docs/spec.md, "Guarded
rollouts", Decisions; the formula, its source and its limits are in
docs/adr/0017-guarded-rollout-decisions.md).

A mixture sequential probability ratio test (mSPRT, Johari, Koomen, Pekelis and Walsh,
"Always Valid Inference: Continuous Monitoring of A/B Tests", Operations Research 70(3),
2022, section 3 and its normal two-stream case) with a half-normal mixture, so it tests
H0: treatment <= control against treatment > control. For an estimate ``D`` of the
difference (treatment minus control, in the direction that is worse) with variance ``V``,
and the mixing scale ``tau``::

    Lambda = 2 * sqrt(V / (V + tau^2)) * exp(tau^2 D^2 / (2 V (V + tau^2)))
               * Phi(D tau / sqrt(V (V + tau^2)))

Under H0 Lambda is a nonnegative (super)martingale with mean at most 1, so by Ville's
inequality it ever reaches ``1 / alpha`` with probability at most ``alpha``, however often
it is looked at: the decision may be taken after every drain.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = [
    "ALPHA",
    "bernoulli_difference",
    "log_mixture_ratio",
    "mean_difference",
    "rejects",
    "z_score",
]

#: The level of the test: a false breach in at most 5 % of A/A plans, ever.
ALPHA: Final = 0.05
_LOG_TWO: Final = math.log(2.0)


def log_mixture_ratio(difference: float, variance: float, tau: float) -> float:
    """``log Lambda`` of the module's formula; ``-inf`` when it is 0 (a difference far
    below zero). ``variance`` and ``tau`` must be positive."""
    if variance <= 0 or tau <= 0:
        raise ValueError("the variance and the mixing scale must be positive")
    tau2 = tau * tau
    total = variance + tau2
    exponent = tau2 * difference * difference / (2.0 * variance * total)
    argument = difference * tau / math.sqrt(variance * total)
    phi = 0.5 * math.erfc(-argument / math.sqrt(2.0))
    if phi <= 0.0:
        return -math.inf
    return _LOG_TWO + 0.5 * math.log(variance / total) + exponent + math.log(phi)


def rejects(log_ratio: float, alpha: float = ALPHA) -> bool:
    """Whether the test rejects H0 (treatment <= control) at level ``alpha``."""
    return log_ratio >= -math.log(alpha)


def z_score(difference: float, variance: float) -> float:
    """The difference in standard errors (reported with the evidence, not the test)."""
    return difference / math.sqrt(variance) if variance > 0 else 0.0


def bernoulli_difference(
    treatment_hits: int, treatment_n: int, control_hits: int, control_n: int
) -> tuple[float, float] | None:
    """(D, V) for two proportions, ``V`` with the pooled rate (the rate under H0's
    boundary, treatment = control; 0 when every request is alike); None when either
    cohort is empty."""
    if treatment_n <= 0 or control_n <= 0:
        return None
    pooled = (treatment_hits + control_hits) / (treatment_n + control_n)
    variance = pooled * (1.0 - pooled) * (1.0 / treatment_n + 1.0 / control_n)
    return treatment_hits / treatment_n - control_hits / control_n, variance


def mean_difference(
    treatment_mean: float,
    treatment_variance: float,
    treatment_n: int,
    control_mean: float,
    control_variance: float,
    control_n: int,
) -> tuple[float, float] | None:
    """(D, V) for two means (Welch's variance of the difference); None without data."""
    if treatment_n <= 0 or control_n <= 0:
        return None
    return (
        treatment_mean - control_mean,
        treatment_variance / treatment_n + control_variance / control_n,
    )
