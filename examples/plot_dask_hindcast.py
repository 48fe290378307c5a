"""
A lazy hindcast with dask: one forecast per init time
=====================================================

A hindcast re-runs the nowcast from many past initialisation times and scores
every forecast against what was observed afterwards; it is how a model is
judged over a whole event instead of one lucky start.  On dask-backed input
(a chunked NetCDF or zarr store, possibly far larger than memory) every
xnowcast call builds a lazy graph; nothing runs until ``.compute()``, and
then blocks of init times run in parallel, on threads here or on the workers
of a ``dask.distributed`` cluster.
"""

import time

import dask
import matplotlib.pyplot as plt
import numpy as np

import xnowcast

# %%
# Open the bundled real sample lazily, in chunks of 6 frames (30 minutes):
ds = xnowcast.open_dataset("sample", chunks={"time": 6})
obs = ds["precipitation"]
print(obs.data)

# %%
# Ask for a forecast from every 5-minute init time between 16:05 and 17:15
# (15 forecasts of 30 minutes each).  ``init_time`` takes a slice, a list or
# one time; a slice or a list adds an ``init_time`` dim.  The call loads the
# model (to learn how many input frames it reads) but runs nothing: the result
# is a dask array, one block per group of init times.
start = time.perf_counter()
fc = obs.nowcast.predict(
    model="extrapolation", steps=6, init_time=slice("2021-07-04T16:05", "2021-07-04T17:15")
)
print(f"graph built in {time.perf_counter() - start:.2f} s")
print(dict(fc.sizes))
print(fc.data)

# %%
# ``valid_time = init_time + lead_time`` is a 2-D coordinate, which is how
# ``verify`` finds the observation each forecast field must be compared with.
# Reducing over space only (``dim=["y", "x"]``) keeps a score per init time;
# the scores are lazy too.
scores = fc.nowcast.verify(
    obs, metrics=["csi", "fss"], thresholds=[1, 4], fss_window="9 km", dim=["y", "x"]
)
print(type(scores["csi"].data).__name__, dict(scores["csi"].sizes))

# %%
# One ``compute`` runs the forecasts and the scores together; each forecast is
# computed once even though two scores read it.
start = time.perf_counter()
with dask.config.set(scheduler="threads", num_workers=2):
    scores = scores.compute()
print(
    f"computed {fc.sizes['init_time']} forecasts and their scores in "
    f"{time.perf_counter() - start:.1f} s"
)

# %%
# Skill of every forecast: CSI at 1 mm/h by init time and lead time, and the
# mean over init times with its spread.
csi = scores["csi"].sel(threshold=1, scale=1)
minutes = csi["lead_time"].values / np.timedelta64(1, "m")
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
mesh = left.pcolormesh(
    minutes, np.arange(csi.sizes["init_time"]), csi.values, vmin=0, vmax=1, cmap="magma"
)
left.set_yticks(np.arange(csi.sizes["init_time"])[::2])
left.set_yticklabels(
    [np.datetime_as_string(t, unit="m")[11:] for t in csi["init_time"].values[::2]]
)
left.set(xlabel="lead time (min)", ylabel="init time (UTC)", title="CSI >= 1 mm/h, extrapolation")
fig.colorbar(mesh, ax=left, label="CSI")
for threshold, colour in ((1, "C0"), (4, "C1")):
    for name, style in (("csi", "-"), ("fss", "--")):
        score = scores[name].sel(threshold=threshold).squeeze(drop=True)
        mean, spread = score.mean("init_time"), score.std("init_time")
        right.plot(minutes, mean, style, color=colour, label=f"{name.upper()} >= {threshold} mm/h")
        right.fill_between(minutes, mean - spread, mean + spread, color=colour, alpha=0.15)
right.set(
    xlabel="lead time (min)",
    ylabel="score",
    ylim=(0, 1),
    title=f"mean and spread over {csi.sizes['init_time']} init times",
)
right.legend()
plt.show()

# %%
# On a cluster
# ------------
#
# The same code runs on a ``dask.distributed`` cluster: the model is built
# and its weights loaded once per worker process (then reused for every block),
# and each worker uses its GPU when it has one (``device="auto"``).  With one
# worker per GPU::
#
#     from dask.distributed import Client, LocalCluster
#
#     client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
#     ds = xarray.open_zarr("s3://bucket/radar.zarr")           # chunked in time
#     fc = ds.precipitation.nowcast.predict(model="extrapolation", steps=18,
#                                           init_time=slice("2021-07-01", "2021-07-31"))
#     fc.to_zarr("hindcast.zarr")                                # computes block by block
#
# See :doc:`/user_guide/scaling` for chunking advice.
