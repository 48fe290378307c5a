"""
Units and radar formats: dBZ and mm/h, ODIM HDF5
================================================

Radar archives come in rain rates (mm/h), accumulations (mm per 5 minutes),
mass fluxes (kg m-2 s-1) or reflectivity (dBZ).  xnowcast reads the units of
every field from ``attrs["units"]``, converts with pint, and hands results back
in the units it was given.  This example converts the bundled real sample
between rain rate and reflectivity, nowcasts and scores it in dBZ, and reads
radar frames from ODIM HDF5 files with :func:`xnowcast.io.open_radar`.
"""

import tempfile
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np

import xnowcast
from xnowcast import units
from xnowcast.plot import radar_colormap

ds = xnowcast.open_dataset("sample")
rate = ds["precipitation"]
print(rate.attrs["units"], rate.attrs["standard_name"], dict(rate.sizes))

# %%
# Rain rate to reflectivity and back
# ----------------------------------
#
# Rain rate ``R`` (mm/h) and reflectivity factor ``Z`` (mm6 m-3) are linked by
# a Z-R relation ``Z = a R**b``; Marshall-Palmer (a=200, b=1.6) is the default.
# No rain is ``-inf`` dBZ, and NaN (missing) stays NaN.
dbz = units.convert_dataarray(rate, "dBZ")
back = units.convert_dataarray(dbz, "mm/h")
wet = rate > 0
print("max reflectivity:", float(dbz.max()), dbz.attrs["units"])
print("dry pixels are -inf dBZ:", bool(np.isneginf(dbz.where(~wet)).sum() == (~wet).sum()))
print("round-trip error (mm/h):", float(abs(back - rate).max()))

# %%
# The same numbers through the scalar helpers, and another Z-R relation (the
# WSR-88D convective one, Z = 300 R^1.4):
rates = np.array([0.1, 1.0, 10.0, 100.0])
print(units.rain_rate_to_dbz(rates).round(1))
print(units.rain_rate_to_dbz(rates, units.ZRRelation(a=300.0, b=1.4)).round(1))

# %%
# Accumulations need the interval they were accumulated over, given either in
# the units string or as ``time_step``; mass fluxes go through the density of
# liquid water:
print(units.convert_values(1.0, "mm/(5 min)", "mm/h"))
print(units.convert_values(1.0, "mm", "mm/h", time_step=np.timedelta64(5, "m")))
print(units.convert_values(1.0, "kg m-2 s-1", "mm/h"))

# %%
# Reflectivity against rain rate for both relations, and one frame of the
# sample in each unit.  dBZ is a logarithmic unit, so a linear dBZ colour scale
# from 7 to 55 dBZ is the logarithmic rain-rate scale from 0.1 to 100 mm/h
# (Marshall-Palmer): the two maps look the same.
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
curve = np.logspace(-1, 2.3, 100)
axes[0].semilogx(curve, units.rain_rate_to_dbz(curve), label="Marshall-Palmer, 200 R^1.6")
axes[0].semilogx(
    curve, units.rain_rate_to_dbz(curve, units.ZRRelation(300.0, 1.4)), label="300 R^1.4"
)
axes[0].set(xlabel="rain rate (mm/h)", ylabel="reflectivity (dBZ)", title="Z-R relations")
axes[0].legend()
frame = rate.isel(time=-1)
im = axes[1].imshow(frame.clip(min=0.05), cmap=radar_colormap(), norm="log", vmin=0.1, vmax=100)
fig.colorbar(im, ax=axes[1], label="mm/h")
# no rain is -inf dBZ: clipped to 0, below the colour scale, it shows white
im = axes[2].imshow(dbz.isel(time=-1).clip(min=0), cmap=radar_colormap(), vmin=7, vmax=55)
fig.colorbar(im, ax=axes[2], label="dBZ")
for ax, title in zip(axes[1:], ["rain rate", "reflectivity"], strict=True):
    ax.set(title=f"{title}, {np.datetime_as_string(frame.time.values, unit='m')}")
    ax.set_axis_off()

# %%
# Results come back in the input's units
# --------------------------------------
#
# A nowcast of a dBZ field is a dBZ field (the model itself runs in mm/h), and
# thresholds may be written in any unit: ``"1 mm/h"`` is converted to dBZ
# through the same Z-R relation before the contingency tables are counted.
fc_dbz = dbz.nowcast.predict(model="persistence", steps=6, init_time=dbz.time.values[12])
print(fc_dbz.attrs["units"], dict(fc_dbz.sizes))
scores = fc_dbz.nowcast.verify(dbz, metrics=["csi"], thresholds=["1 mm/h", "35 dBZ"])
print(scores["threshold"].values, "dBZ")  # 1 mm/h is 23 dBZ with Marshall-Palmer
print(scores["csi"].sel(scale=1).round(3).to_pandas())

# %%
# Reading radar files: ODIM HDF5
# ------------------------------
#
# :func:`xnowcast.io.open_radar` reads ODIM HDF5 (the OPERA standard, used by
# RMI and many other services), KNMI HDF5, FMI PGM and MeteoSwiss GIF
# composites into the same CF Dataset, detecting the format from each file's
# content.  No radar files ship with this documentation, so we first write a
# few frames of the sample as ODIM files, the way a radar centre's software
# does: reflectivity (quantity ``DBZH``) coded in 8 bits as
# ``dBZ = offset + gain * raw``, with a ``nodata`` code for pixels outside the
# radar range and ``undetect`` for pixels observed without echo.
GAIN, OFFSET, NODATA, UNDETECT = 0.5, -32.0, 255, 0


def write_odim(path, field):
    """Write one (y, x) dBZ DataArray of the sample as an ODIM_H5 composite."""
    raw = np.round((field.values - OFFSET) / GAIN).clip(1, 254)
    raw[~np.isfinite(field.values) | (field.values <= OFFSET)] = UNDETECT
    raw[np.isnan(field.values)] = NODATA
    step = float(field.x[1] - field.x[0])
    stamp = np.datetime_as_string(field.time.values, unit="s").replace("-", "").replace(":", "")
    with h5py.File(path, "w") as f:
        f.attrs["Conventions"] = np.bytes_("ODIM_H5/V2_2")
        what = f.create_group("what")
        what.attrs.update(
            {
                "object": np.bytes_("COMP"),
                "date": np.bytes_(stamp[:8]),
                "time": np.bytes_(stamp[9:]),
            }
        )
        where = f.create_group("where")
        where.attrs.update(
            {
                "projdef": np.bytes_(ds.crs.attrs["proj4_params"]),
                "xsize": field.sizes["x"],
                "ysize": field.sizes["y"],
                "xscale": step,
                "yscale": step,
                "UL_x": float(field.x[0]) - step / 2,
                "UL_y": float(field.y[0]) + step / 2,
            }
        )
        f.create_group("dataset1/what").attrs["product"] = np.bytes_("COMP")
        data = f.create_group("dataset1/data1")
        data.create_dataset("data", data=raw.astype(np.uint8), compression="gzip")
        data.create_group("what").attrs.update(
            {
                "quantity": np.bytes_("DBZH"),
                "gain": GAIN,
                "offset": OFFSET,
                "nodata": float(NODATA),
                "undetect": float(UNDETECT),
            }
        )


# a disc outside the "radar range" is missing in these frames
yy, xx = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
outside = (yy - 256) ** 2 + (xx - 256) ** 2 < 90**2
folder = Path(tempfile.mkdtemp())
for t in range(-3, 0):
    write_odim(folder / f"frame{t + 3}.h5", dbz.isel(time=t).where(~outside))

print(xnowcast.io.detect_format(folder / "frame0.h5"))
radar = xnowcast.open_radar(folder / "*.h5")
print(radar)

# %%
# The decoded frames carry the grid, the projection (a CF ``crs`` variable),
# NaN where the files said ``nodata``, and values within the 8-bit coding's
# half step (0.25 dB) of what was written:
refl = radar["reflectivity"]
observed = dbz.isel(time=slice(-3, None)).where(~outside)
inside = np.isfinite(observed) & (observed > OFFSET + GAIN)
print("grid identical:", bool(np.allclose(refl.x, dbz.x) and np.allclose(refl.y, dbz.y)))
print("missing stays missing:", bool(refl.isnull().values[:, outside].all()))
print("largest coding error (dB):", float(abs(refl - observed).where(inside).max()))
print(refl.attrs["units"], refl.attrs["standard_name"], radar.crs.attrs["grid_mapping_name"])

# %%
# Real archives are opened the same way, with a glob, a folder or a list of
# files (``chunks={}`` makes the result dask-backed, one chunk per file), and
# ``xnowcast.open_dataset("rmi-20210704")`` downloads, verifies and opens a
# whole real event::
#
#     ds = xnowcast.open_radar("radar/rmi/radqpe/20210704/*.hdf")
#     ds = xnowcast.open_radar("radar/fmi/pgm/20160928/", format="fmi_pgm", chunks={})
#
# The decoded reflectivity converts to rain rate like any other field (the
# ``undetect`` pixels decode to -32 dBZ, a rain rate of about 0.001 mm/h):
rain = units.convert_dataarray(refl, "mm/h").isel(time=-1)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained")
im = axes[0].imshow(refl.isel(time=-1), cmap=radar_colormap(), vmin=7, vmax=55)
fig.colorbar(im, ax=axes[0], label="dBZ", extend="min")
im = axes[1].imshow(rain.clip(min=0.05), cmap=radar_colormap(), norm="log", vmin=0.1, vmax=100)
fig.colorbar(im, ax=axes[1], label="mm/h", extend="both")
for ax, title in zip(axes, ["decoded ODIM, dBZ", "converted to mm/h"], strict=True):
    ax.set(title=f"{title} (grey: nodata)")
    ax.set_axis_off()
plt.show()
