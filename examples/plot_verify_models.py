"""
Score every nowcast model against lead time: CSI, FSS, CRPS
===========================================================

:func:`xnowcast.verify` (or ``forecast.nowcast.verify``) matches every
forecast field with the observation at its valid time, converts units, and
returns a tidy Dataset of scores by lead time, threshold, FSS window and
pooling scale.  Here every registered nowcast model forecasts 90 minutes of the
bundled real RMI sample from 16:15 UTC and is scored the way the nowcasting
literature scores models:

* **CSI** (critical success index) of rain ``>= 1`` and ``>= 4 mm/h``;
* **FSS** (fractions skill score) in 9 km x 9 km neighbourhoods, which forgives
  a storm forecast a few kilometres off;
* **CRPS** (continuous ranked probability score, mm/h) of the ensemble; for a
  deterministic forecast it equals the mean absolute error.

One forecast from one init time is a small sample: treat the differences
between models as an illustration, not a verdict (the :doc:`hindcast example
<plot_dask_hindcast>` averages over many init times).
"""

import matplotlib.pyplot as plt
import numpy as np

import xnowcast
from xnowcast.plot import plot_scores

obs = xnowcast.open_dataset("sample")["precipitation"]
init = obs.time.values[5]

forecasts = {}
for name in xnowcast.list_models("nowcast"):
    spec = xnowcast.registry.get_spec(name, task="nowcast")
    if spec.weights_required:  # ships no weights in this build: train it first
        continue
    stochastic = spec.stochastic
    forecasts[name] = obs.nowcast.predict(
        model=name, steps=18, members=4 if stochastic else 1, init_time=init, seed=0
    )
    if stochastic:  # the ensemble mean, scored as a deterministic forecast
        forecasts[f"{name} (mean)"] = forecasts[name].mean("member", keep_attrs=True)

# %%
# A forecast is missing (NaN) where its model cannot know the answer:
# extrapolation, for instance, does not invent the rain that would flow in
# across the domain's edge.  Scores leave missing pixels out, so two models
# are only comparable on the pixels both forecast.  Score every model on the
# pixels that all of them forecast:
known = [fc.notnull().any("member") if "member" in fc.dims else fc.notnull() for fc in
         forecasts.values()]  # fmt: skip
common = known[0]
for mask in known[1:]:
    common = common & mask
for name, mask in zip(forecasts, known, strict=True):
    share = mask.mean(["y", "x"]).values
    print(f"{name:>22}: forecasts {share[0]:.0%} of the domain at 5 min, {share[-1]:.0%} at 90 min")
print(f"{'all models':>22}: {float(common.isel(lead_time=-1).mean()):.0%} at 90 min")

scores = {
    name: fc.where(common).nowcast.verify(
        obs, metrics=["csi", "fss", "crps"], thresholds=[1, 4], fss_window="9 km", scales=[1, 4]
    )
    for name, fc in forecasts.items()
}
print(list(scores))
print(scores[next(iter(scores))])

# %%
# Each score variable says how to read it:
info = scores[next(iter(scores))]
for metric in ("csi", "fss", "crps"):
    attrs = info[metric].attrs
    print(
        f"{metric}: {attrs['long_name']}, {attrs['units']}, better {attrs['better']}, "
        f"perfect {attrs['perfect_score']}"
    )

# %%
# Scores against lead time, all models on each axes, on the common pixels:
fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), layout="constrained")
plot_scores(scores, "csi", threshold=1, scale=1, ax=axes[0, 0])
plot_scores(scores, "csi", threshold=4, scale=1, ax=axes[0, 1])
plot_scores(scores, "fss", threshold=1, ax=axes[1, 0])
plot_scores(scores, "crps", scale=1, ax=axes[1, 1])
for ax in axes.flat[:3]:
    ax.set_ylim(0, 1)

# %%
# The DGMR paper also scores fields after pooling: CRPS on 4 km x 4 km block
# means asks whether the forecast has the right amount of rain in the right
# area, not in the right pixel.
ax = plot_scores(scores, "crps")
ax.set_title("CRPS, no pooling (1) and 4 km average pooling (4)")
plt.show()

# %%
# The numbers behind the curves, at 30, 60 and 90 minutes:
for name, ds in scores.items():
    csi = ds["csi"].sel(threshold=1, scale=1)
    row = [float(csi.sel(lead_time=np.timedelta64(m, "m"))) for m in (30, 60, 90)]
    crps = float(ds["crps"].sel(scale=1).mean())
    print(f"{name:>22}: CSI>=1 mm/h at 30/60/90 min {np.round(row, 3)}, mean CRPS {crps:.3f} mm/h")
plt.show()
