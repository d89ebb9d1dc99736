"""Mergeable statistics on numpy arrays (pure: numpy and the standard library only).

Arrays put bins (or the three moment components ``(n, mean, m2)``) on the LAST axis; any
leading axes are independent rows (slices, windows), and results are arrays over those
leading axes.

- :mod:`~streamguard.stats.binning` -- :class:`FixedBins`, :class:`LogBuckets` (DDSketch).
- :mod:`~streamguard.stats.histogram` -- quantiles and reference-quantile regrouping.
- :mod:`~streamguard.stats.divergence` -- PSI, Jensen-Shannon, KS, Wasserstein-1, TV.
- :mod:`~streamguard.stats.moments` -- mergeable ``(n, mean, m2)`` moments.
- :mod:`~streamguard.stats.page_hinkley` -- :class:`PageHinkley` (upward Page-Hinkley test).
- :mod:`~streamguard.stats.onset` -- :class:`OnsetTracker` (Page-Hinkley + change point).
- :mod:`~streamguard.stats.change` -- window-limited Shiryaev-Roberts sum of mSPRTs.
- :mod:`~streamguard.stats.equivalence` -- tests against a minimum effect, Holm's step-down.

Examples
--------
>>> import numpy as np
>>> bins = FixedBins(0.0, 1.0, 10)
>>> ref = np.bincount(bins.index(np.linspace(0.0, 1.0, 101)), minlength=bins.bins)
>>> cur = np.bincount(bins.index(np.linspace(0.2, 1.0, 101)), minlength=bins.bins)
>>> float(total_variation(ref, cur)) > 0.1
True
"""

from streamguard.stats.binning import FixedBins, LogBuckets
from streamguard.stats.change import (
    SCALES,
    Change,
    change_statistic,
    change_threshold,
    suffix_moments,
)
from streamguard.stats.concentration import (
    ElasticityFit,
    catalogue_coverage,
    concentration_trend,
    elasticity,
    gini,
    normalized_entropy,
    top_share,
)
from streamguard.stats.divergence import (
    js_distance,
    ks_statistic,
    psi,
    total_variation,
    wasserstein1,
)
from streamguard.stats.equivalence import (
    binomial_sf,
    exceedance_p,
    holm,
    interval_null_p,
    normal_quantile,
)
from streamguard.stats.heavy_hitters import CountMin, DistinctCounter, SpaceSaving, hash64
from streamguard.stats.histogram import quantile_from_counts, quantile_groups, regroup
from streamguard.stats.moments import (
    merge_moments,
    merge_moments_by_group,
    moment_mean,
    moment_variance,
    moments_by_group,
    subtract_moments,
)
from streamguard.stats.multiple import (
    PostStratified,
    benjamini_hochberg,
    e_benjamini_hochberg,
    post_stratified_difference,
)
from streamguard.stats.onset import OnsetTracker
from streamguard.stats.page_hinkley import PageHinkley
from streamguard.stats.running_moments import Moments
from streamguard.stats.sequential import (
    Msprt,
    confidence_sequence,
    msprt,
    normal_mixture_p_value,
    running_p,
)
from streamguard.stats.srm import (
    chi_square_p_value,
    dirichlet_multinomial_log_bf,
    log_gamma,
    pearson_residuals,
    srm_p_value,
)

__all__ = [
    "SCALES",
    "Change",
    "CountMin",
    "DistinctCounter",
    "ElasticityFit",
    "FixedBins",
    "LogBuckets",
    "Moments",
    "Msprt",
    "OnsetTracker",
    "PageHinkley",
    "PostStratified",
    "SpaceSaving",
    "benjamini_hochberg",
    "binomial_sf",
    "catalogue_coverage",
    "change_statistic",
    "change_threshold",
    "chi_square_p_value",
    "concentration_trend",
    "confidence_sequence",
    "dirichlet_multinomial_log_bf",
    "e_benjamini_hochberg",
    "elasticity",
    "exceedance_p",
    "gini",
    "hash64",
    "holm",
    "interval_null_p",
    "js_distance",
    "ks_statistic",
    "log_gamma",
    "merge_moments",
    "merge_moments_by_group",
    "moment_mean",
    "moment_variance",
    "moments_by_group",
    "msprt",
    "normal_mixture_p_value",
    "normal_quantile",
    "normalized_entropy",
    "pearson_residuals",
    "post_stratified_difference",
    "psi",
    "quantile_from_counts",
    "quantile_groups",
    "regroup",
    "running_p",
    "srm_p_value",
    "subtract_moments",
    "suffix_moments",
    "top_share",
    "total_variation",
    "wasserstein1",
]
