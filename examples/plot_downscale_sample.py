"""
Downscale a coarsened real event and compare with the truth
===========================================================

Spatiotemporal downscaling turns coarse, infrequent fields (a climate model,
an older radar product) into fine, frequent ones.  To check a downscaling
model we need the fine truth, so we make the coarse input from real radar:
the bundled RMI sample (1 km, 5 min) is block-averaged to 2 km and thinned to
10 minutes, then every registered downscaling model brings it back to
1 km / 5 min (``factor=2, time_factor=2``), and the result is compared with
the radar's own fine fields.
"""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

import xnowcast
from xnowcast.metrics import ssim
from xnowcast.plot import plot_psd, plot_semivariogram, radar_colormap

obs = xnowcast.open_dataset("sample")["precipitation"]
# the first hour: 7 coarse frames, 2 km / 10 min (attrs, units included, are kept)
coarse = obs.coarsen(y=2, x=2).mean().isel(time=slice(0, 13, 2))
truth = obs.isel(time=slice(0, (coarse.sizes["time"] - 1) * 2 + 1))
print("coarse:", dict(coarse.sizes), "truth:", dict(truth.sizes))

# %%
# Downscale with every model registered in this build (``.downscale.models()``).
# FC-ZSM also reads static fields on the fine grid; given none, it uses the ones
# its shipped weights were trained with, made from the coarse input itself
# (radar coverage and the projected coordinates, :func:`xnowcast.grids.static_fields`).
fine = {}
for name in coarse.downscale.models():
    fine[name] = coarse.downscale(factor=2, time_factor=2, model=name)
    print(f"{name:>10}: {dict(fine[name].sizes)}, weights: {fine[name].attrs['xnowcast_weights']}")

# %%
# The output grid refines the input's cells (cell centres), so block means of
# the output sit on the input grid again, and the inserted frames fall halfway
# between input frames:
out = fine[next(iter(fine))]
back = out.coarsen(y=2, x=2).mean()
print("grid comes back:", bool(np.allclose(back.x, coarse.x) and np.allclose(back.y, coarse.y)))
print("times:", [np.datetime_as_string(t, unit="m")[11:] for t in out.time.values[:5]])

# %%
# Errors against the truth, in mm/h: MSE over all frames, over the inserted
# frames only (the hard ones: nothing was observed there) and over the frames
# at input times, and the SSIM of the FC-ZSM paper (7 x 7 windows).
span = float(truth.max() - truth.min())
inserted = np.arange(truth.sizes["time"]) % 2 == 1
print(f"{'model':>10}  {'MSE':>7}  {'inserted':>8}  {'original':>8}  {'SSIM':>6}")
for name, field in fine.items():
    err = (field - truth.values) ** 2
    score = ssim(field.values, truth.values, data_range=span).mean()
    print(
        f"{name:>10}  {float(err.mean()):7.3f}  {float(err[inserted].mean()):8.3f}  "
        f"{float(err[~inserted].mean()):8.3f}  {score:6.3f}"
    )

# %%
# An inserted frame (16:25, between the coarse frames of 16:20 and 16:30):
when = np.datetime64("2021-07-04T16:25")
panels = {"coarse input, 16:20": coarse.sel(time=np.datetime64("2021-07-04T16:20"))}
panels.update({name: field.sel(time=when) for name, field in fine.items()})
panels["truth (radar)"] = truth.sel(time=when)
ncols = 4
nrows = -(-len(panels) // ncols)
fig, axes = plt.subplots(
    nrows, ncols, figsize=(3 * ncols + 1, 3 * nrows), layout="constrained", squeeze=False
)
norm, cmap = LogNorm(0.1, 100), radar_colormap()
for ax in axes.flat:
    ax.set_axis_off()
for ax, (title, field) in zip(axes.flat, panels.items(), strict=False):  # spare axes stay empty
    mesh = ax.pcolormesh(
        field.x / 1000,
        field.y / 1000,
        np.ma.masked_invalid(field.clip(min=0.05)),
        norm=norm,
        cmap=cmap,
    )
    ax.set(title=title, aspect="equal")
fig.colorbar(mesh, ax=axes.ravel().tolist(), label="mm/h", extend="both", shrink=0.8)

# %%
# Interpolation smooths: its power spectrum falls below the truth's at the
# small scales the coarse input cannot hold (wavelengths under about 4 km).
# The other curves show how much of that power each learned model puts back.
spectra = {name: field.isel(time=inserted) for name, field in fine.items()}
spectra["truth"] = truth.isel(time=inserted)
ax = plot_psd(spectra)
ax.set_title("power spectra of the inserted frames")
plt.show()

# %%
# The semivariogram says the same in real space, and needs no gap-free domain:
# half the mean squared difference of ``log(1 + R)`` between cells 1 to 64 km
# apart.  A smooth model falls below the truth at the shortest lags; ``verify``
# reduces this to one ratio per lag (``metrics=["semivariogram_ratio"]``).
ax = plot_semivariogram(spectra)
ax.set_title("semivariograms of the inserted frames")
ratios = xnowcast.verify(
    {name: field.isel(time=inserted) for name, field in fine.items()},
    truth.isel(time=inserted),
    metrics=["semivariogram_ratio"],
    variogram_lags=["1 km", "2 km", "4 km"],
    dim=["time", "y", "x"],
)
for name, scores in ratios.items():
    print(f"{name:>10}: semivariogram / truth's at 1, 2, 4 km:",
          np.round(scores["semivariogram_ratio"].values, 2))  # fmt: skip
plt.show()
