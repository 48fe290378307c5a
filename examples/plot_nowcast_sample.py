"""
Nowcast real radar with every registered model
===============================================

The bundled sample is a 256 km x 256 km crop of the Belgian RMI radar
composite of 4 July 2021, a day of intense convection: 24 frames, 5 minutes
apart, in mm/h.  Here every nowcast model of this build of xnowcast that runs
without training first forecasts 90 minutes (18 lead times) from 16:15 UTC, and each forecast is drawn
next to what the radar observed at the same valid times.
"""

import numpy as np

import xnowcast

ds = xnowcast.open_dataset("sample")
obs = ds["precipitation"]
print(obs.attrs["long_name"], obs.attrs["units"], dict(obs.sizes))
print(ds.attrs["license"])

# %%
# The models available here (:func:`xnowcast.list_models` reads the registry;
# the :doc:`models page </models>` says what each one is), less those that ship
# no weights in this build and must be trained first (``weights_required``):
models = [
    name
    for name in xnowcast.list_models("nowcast")
    if not xnowcast.registry.get_spec(name, task="nowcast").weights_required
]
print(models)

# %%
# Initialise at the sixth frame: the frames before it are the model's input,
# and the 18 frames after it are the observations each lead time is compared
# with.  Stochastic models (DGMR) give an ensemble with ``members``; ``seed``
# makes it reproducible.
init = obs.time.values[5]
forecasts = {}
for name in models:
    stochastic = xnowcast.registry.get_spec(name, task="nowcast").stochastic
    forecasts[name] = obs.nowcast.predict(
        model=name, steps=18, members=3 if stochastic else 1, init_time=init, seed=0
    )
    print(name, dict(forecasts[name].sizes))

# %%
# A forecast is a CF DataArray in the input's units, with ``lead_time``
# (``forecast_period``), ``init_time`` (``forecast_reference_time``), a
# ``valid_time`` coordinate, the input's grid and grid mapping, and attributes
# recording the model and its weights:
fc = forecasts[models[0]]
print(fc.coords["valid_time"].values[[0, -1]])
print({k: v for k, v in fc.attrs.items() if k.startswith("xnowcast") or k == "units"})

# %%
# Forecast (top) against observation (bottom) at 15, 30, 60 and 90 minutes,
# one figure per model (the first member of an ensemble).  White is no rain,
# grey would be missing data.
for name, fc in forecasts.items():
    fig = fc.nowcast.plot(obs, lead_times=[15, 30, 60, 90], panel_size=2.4)
    fig.suptitle(f"{name}: forecast from {np.datetime_as_string(init, unit='m')} UTC")

# %%
# Ensemble members
# ----------------
#
# A stochastic model draws a new latent for every member, so that the members
# can be different, equally likely futures.  How different they really are is
# a property of the trained weights, worth measuring before trusting an
# ensemble: here, the spread between members against the mean rain rate.
# (This section draws nothing when no stochastic model is registered.)
for name, fc in forecasts.items():
    if "member" not in fc.dims:
        continue
    sixty = fc.sel(lead_time=np.timedelta64(60, "m"))
    spread, rate = float(sixty.std("member").mean()), float(sixty.mean())
    print(
        f"{name} at 60 min: member spread {spread:.3f} {fc.attrs['units']}, "
        f"{spread / rate:.1%} of the mean rate {rate:.2f}"
    )
    fig = fc.nowcast.plot(obs, lead_times=[60], member="mean", panel_size=2.4)
    fig.suptitle(f"{name}: ensemble mean of {fc.sizes['member']} members")

# %%
# Animation
# ---------
#
# The first model's forecast and the observations every 10 minutes of lead
# time (the frames are embedded in the page, so it plays without a server):
from matplotlib import animation
from matplotlib import pyplot as plt
from matplotlib.colors import LogNorm

from xnowcast.plot import radar_colormap
from xnowcast.verification import align_observations

name, fc = next(iter(forecasts.items()))
if "member" in fc.dims:
    fc = fc.isel(member=0)
seen = align_observations(fc, obs)
fig, axes = plt.subplots(1, 2, figsize=(8, 3.9), layout="constrained", dpi=72)
norm, cmap = LogNorm(0.1, 100), radar_colormap()
maps = []
for ax, field, title in zip(axes, [fc, seen], [name, "observed"], strict=True):
    first = field.isel(lead_time=0)
    maps.append(ax.imshow(first.clip(min=0.05), norm=norm, cmap=cmap))
    ax.set_title(title)
    ax.set_axis_off()
fig.colorbar(maps[0], ax=axes, label="mm/h", extend="both", shrink=0.8)
label = fig.suptitle("")


def show(step):
    for image, field in zip(maps, [fc, seen], strict=True):
        frame = field.isel(lead_time=step)
        image.set_data(frame.clip(min=0.05))
    valid = np.datetime_as_string(fc.valid_time.values[step], unit="m")
    label.set_text(f"+{(step + 1) * 5} min, valid {valid} UTC")
    return [*maps, label]


movie = animation.FuncAnimation(fig, show, frames=range(1, fc.sizes["lead_time"], 2), interval=500)
