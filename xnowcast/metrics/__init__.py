"""Verification scores on arrays: categorical, continuous, neighbourhood, structural, spectral.

The functions here take DataArrays (or numpy arrays, for :func:`ssim` and
:func:`rapsd`) whose dims are named by the caller, thresholds in the data's
units and window sizes in grid cells; they know nothing of CF conventions,
units or forecast alignment, which :func:`xnowcast.verification.verify` adds.
Missing values (NaN) in either field are left out of every score.  Everything
is lazy on dask input.  This package never imports torch at import time
(``learned`` imports it when the learned distance is computed).

=================  ==========================================================
module             scores
=================  ==========================================================
``categorical``    CSI, HSS, POD, FAR, frequency bias, ETS (``xskillscore.Contingency``)
``continuous``     MSE, MAE, RMSE, mean error, CRPS (``xskillscore.crps_ensemble``), fair CRPS
``spatial``        fractions skill score, average/max pooling
``structural``     SSIM (FC-ZSM paper)
``learned``        the AtmoDist distance of a self-supervised radar encoder (torch, at call time)
``spectral``       radially averaged power spectral density
``variogram``      empirical semivariogram and its forecast / observation ratio
``registry``       metric metadata (:class:`MetricInfo`)
=================  ==========================================================
"""

from xnowcast.metrics.categorical import (
    CATEGORICAL_SCORES,
    categorical_score,
    categorical_scores,
    contingency,
    csi,
    ets,
    far,
    fbias,
    hss,
    pod,
)
from xnowcast.metrics.continuous import crps, mae, mean_error, mse, rmse
from xnowcast.metrics.learned import atmodist_terms_array
from xnowcast.metrics.registry import (
    METRICS,
    MetricError,
    MetricInfo,
    available_metrics,
    metric_info,
)
from xnowcast.metrics.spatial import (
    FSS_TERMS,
    fss,
    fss_from_terms,
    fss_terms,
    fss_terms_array,
    pool,
)
from xnowcast.metrics.spectral import rapsd, rapsd_wavenumbers
from xnowcast.metrics.structural import ssim, ssim_terms_array
from xnowcast.metrics.variogram import (
    semivariogram,
    semivariogram_ratio_terms,
    semivariogram_sums,
)

__all__ = [
    "CATEGORICAL_SCORES",
    "FSS_TERMS",
    "METRICS",
    "MetricError",
    "MetricInfo",
    "atmodist_terms_array",
    "available_metrics",
    "categorical_score",
    "categorical_scores",
    "contingency",
    "crps",
    "csi",
    "ets",
    "far",
    "fbias",
    "fss",
    "fss_from_terms",
    "fss_terms",
    "fss_terms_array",
    "hss",
    "mae",
    "mean_error",
    "metric_info",
    "mse",
    "pod",
    "pool",
    "rapsd",
    "rapsd_wavenumbers",
    "rmse",
    "semivariogram",
    "semivariogram_ratio_terms",
    "semivariogram_sums",
    "ssim",
    "ssim_terms_array",
]
