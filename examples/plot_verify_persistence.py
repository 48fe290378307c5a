"""
Verify persistence on a real storm: CSI, FSS and pooled CRPS by lead time
=========================================================================

Persistence (the last radar frame held still) is the floor every nowcast
must beat.  Here it is scored on the bundled real RMI radar sample (Belgium,
4 July 2021, intense convection) from four initialisation times, the way the
nowcasting literature scores models:

* **CSI** (critical success index) of rain ``>= 1``, ``>= 4`` and ``>= 8 mm/h``,
  from the contingency table of each lead time pooled over space and init times;
* **FSS** (fractions skill score) in neighbourhoods of 1, 9 and 25 km, which
  forgives a storm forecast a few kilometres off;
* **CRPS** (mm/h) after average pooling over 1, 4 and 16 km blocks, as in the
  DGMR paper (for a deterministic forecast the CRPS is the mean absolute error);
* the radially averaged **power spectrum**, which shows how blurry a forecast is.

:func:`xnowcast.verify` matches every forecast field with the observation at
its ``valid_time`` (no manual slicing), so the observations are simply the
whole event.
"""

import matplotlib.pyplot as plt
import numpy as np

import xnowcast
from xnowcast.plot import plot_forecast_panel, plot_psd, plot_scores

obs = xnowcast.open_dataset("sample")["precipitation"]
print(dict(obs.sizes), obs.attrs["units"])

# %%
# A hindcast: one 60-minute persistence forecast from each of four init
# times, 15 minutes apart.  An optical-flow extrapolation nowcast from the
# same times gives a second model to compare with.
inits = obs.time.values[2:12:3]
forecasts = {
    model: obs.nowcast.predict(model=model, steps=12, init_time=inits, progress=False)
    for model in ("persistence", "extrapolation")
}
fc = forecasts["persistence"]
print(dict(fc.sizes))
print(fc.valid_time.values[0, [0, -1]])

# %%
# Score both.  Thresholds are in the data's units (mm/h) unless written with
# units (``"4 mm/h"``, ``"35 dBZ"``); FSS windows and pooling scales are grid
# cells or lengths (``"9 km"``).  Pixels the radar did not see, or that a
# forecast cannot know, are left out of every score.
scores = {
    model: xnowcast.verify(
        forecast,
        obs,
        metrics=["csi", "fss", "crps"],
        thresholds=[1, 4, 8],
        fss_window=["1 km", "9 km", "25 km"],
    )
    for model, forecast in forecasts.items()
}
print(scores["persistence"])

# %%
# The pooled CRPS of the DGMR paper: both fields are average-pooled over
# 4 km x 4 km and 16 km x 16 km blocks first (``pooling="max"`` scores the
# block maxima instead).
pooled = {
    model: xnowcast.verify(forecast, obs, metrics=["crps"], scales=[1, "4 km", "16 km"])
    for model, forecast in forecasts.items()
}

# %%
# Each variable carries how to read it:
for name, var in scores["persistence"].data_vars.items():
    print(
        f"{name}: {var.attrs['long_name']} [{var.attrs['units']}], "
        f"better {var.attrs['better']}, perfect {var.attrs['perfect_score']}"
    )

# %%
# CSI falls quickly with lead time, and faster for intense rain: convective
# cells move and grow or decay within minutes.
fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
plot_scores(scores["persistence"], "csi", scale=1, ax=axes[0])
axes[0].set_title("persistence: CSI at three thresholds")
plot_scores(scores, "csi", threshold=4, scale=1, ax=axes[1])
axes[1].set_title("CSI of rain >= 4 mm/h")
for ax in axes:
    ax.set_ylim(0, 1)

# %%
# FSS at 4 mm/h: larger neighbourhoods are more forgiving.  Persistence keeps
# the storm's size and intensity right, so its FSS stays well above its CSI.
ax = plot_scores(scores["persistence"], "fss", threshold=4)
ax.set_ylim(0, 1)

# %%
# Pooled CRPS (DGMR): average pooling over 4 km and 16 km blocks asks whether
# the right amount of rain falls in the right area rather than the right pixel.
ax = plot_scores(pooled, "crps")
ax.set_title("CRPS after 1, 4 and 16 km average pooling")

# %%
# Forecast against observation at 15, 30 and 60 minutes from the first init
# time (grey: no radar data; white: no rain).
fig = plot_forecast_panel(fc, obs, lead_times=[15, 30, 60])

# %%
# Blurry forecasts lose power at short wavelengths.  Holding a field still
# keeps its spectrum (persistence differs from the observed curve only because
# the storm itself changed in the hour); semi-Lagrangian extrapolation
# interpolates and so smooths a little.  The extrapolation has no values where
# rain would have flowed in from outside the domain: for the spectrum only,
# those cells are counted as no rain (``fill_value=0``).
hour = np.timedelta64(60, "m")
valid = fc.valid_time.sel(lead_time=hour).values
ax = plot_psd(
    {
        "observed": obs.sel(time=valid),
        "persistence": fc.sel(lead_time=hour),
        "extrapolation": forecasts["extrapolation"].sel(lead_time=hour),
    },
    fill_value=0.0,
)
ax.set_title("power spectra at 60 minutes, mean of 4 init times")

# %%
# The numbers behind the curves:
for model, ds in scores.items():
    csi = ds["csi"].sel(scale=1)
    for minutes in (15, 30, 60):
        row = csi.sel(lead_time=np.timedelta64(minutes, "m")).values
        print(f"{model:>13} +{minutes:2d} min  CSI >= 1/4/8 mm/h: {np.round(row, 3)}")
plt.show()
