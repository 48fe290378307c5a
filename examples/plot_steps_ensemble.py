"""
A calibrated ensemble with STEPS: members, exceedance probability, CRPS
=======================================================================

``model="steps"`` is the Short-Term Ensemble Prediction System (Bowler, Pierce
and Seed 2006) in torch: the rain field is split into spatial scales, each
scale evolves by its own AR(2) model with noise of the observed spectrum, and
every member follows its own perturbed motion. It has no weights, so it runs
on any radar grid and time step.

Here it forecasts 60 minutes of the bundled real RMI sample with 8 members; we
look at the members, at the probability of rain ``>= 1 mm/h``, and at the CRPS
of the ensemble against the deterministic extrapolation nowcast.
"""

import matplotlib.pyplot as plt
import numpy as np

import xnowcast
from xnowcast.plot import plot_exceedance

obs = xnowcast.open_dataset("sample")["precipitation"]
init = obs.time.values[8]
ensemble = obs.nowcast.predict(model="steps", steps=12, members=8, init_time=init, seed=0)
extrapolation = obs.nowcast.predict(model="extrapolation", steps=12, init_time=init)
print(ensemble.dims, ensemble.attrs["units"], ensemble.attrs["xnowcast_model"])

# %%
# Four members at 60 minutes next to what the radar saw: the same storms, each
# with its own small-scale structure and a slightly different displacement.
valid = init + np.timedelta64(60, "m")
fig, axes = plt.subplots(1, 5, figsize=(15, 3.4), layout="constrained")
style = dict(vmin=0, vmax=20, cmap="turbo", add_colorbar=False)
obs.sel(time=valid).plot(ax=axes[0], **style)
axes[0].set_title("observed, +60 min")
for member, ax in zip(range(4), axes[1:], strict=True):
    image = ensemble.isel(lead_time=-1, member=member).plot(ax=ax, **style)
    ax.set_title(f"member {member}")
for ax in axes:
    ax.set_axis_off()
fig.colorbar(image, ax=axes, label="rain rate (mm/h)", shrink=0.8)

# %%
# The probability that the rain rate reaches 1 mm/h is the fraction of members
# that reach it; the observed 1 mm/h contour is drawn on top.
plot_exceedance(ensemble, "1 mm/h", 60, observations=obs)

# %%
# CRPS against lead time: for the deterministic extrapolation it is the mean
# absolute error; the ensemble's spread is rewarded only where it covers the
# observation. Both are scored on the pixels both forecast.
common = ensemble.notnull().all("member") & extrapolation.notnull()
scores = {
    "steps (8 members)": ensemble.where(common).nowcast.verify(obs, metrics=["crps"]),
    "extrapolation": extrapolation.where(common).nowcast.verify(obs, metrics=["crps"]),
}
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
for name, score in scores.items():
    crps = score["crps"].sel(scale=1)
    minutes = crps.lead_time.values / np.timedelta64(1, "m")
    ax.plot(minutes, crps.values, marker="o", label=name)
    print(f"{name:>18}: CRPS at 30/60 min {crps.values[5]:.3f} / {crps.values[11]:.3f} mm/h")
ax.set_xlabel("lead time (min)")
ax.set_ylabel("CRPS (mm/h), lower is better")
ax.legend()
plt.show()
