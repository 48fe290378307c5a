"""Score forecasts against observations: the xarray-in, tidy-Dataset-out ``verify``.

:func:`verify` finds the precipitation variable and the axes (CF conventions),
matches each forecast field to the observation at its ``valid_time`` (no manual
slicing), converts the observations to the forecast's units, turns thresholds
and scales with units into the data's units and grid cells, and computes the
scores of :mod:`xnowcast.metrics`, reduced over space (and ``init_time``).  The
result is one variable per metric with dims among ``lead_time``, ``threshold``,
``window`` (FSS) and ``scale`` (pooled scores), and CF-style attributes.

Missing observations (NaN, or valid times the observations do not have) and
missing forecast pixels are left out of every score: they never count as "no
rain".  Dask-backed input gives a lazy result.

=================  =============================================================
module             job
=================  =============================================================
``scoring``        :func:`verify`: the pipeline and the tidy result
``alignment``      :func:`align_observations`: observations at the valid times
``lengths``        lengths such as ``"4 km"`` as whole numbers of grid cells
``spectrum``       :func:`power_spectrum` of fields with CF axes and units
``variogram``      :func:`semivariogram` of such fields; the ratio ``verify`` reports
=================  =============================================================
"""

from xnowcast.verification.alignment import align_observations
from xnowcast.verification.scoring import verify
from xnowcast.verification.spectrum import power_spectrum
from xnowcast.verification.variogram import semivariogram

__all__ = ["align_observations", "power_spectrum", "semivariogram", "verify"]
