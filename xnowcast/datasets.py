"""Real radar events, fetched with pooch and opened as CF Datasets.

>>> import xnowcast.datasets as xd
>>> [d["name"] for d in xd.list_datasets()]  # doctest: +SKIP
>>> ds = xd.open_dataset("rmi-20210704")  # doctest: +SKIP

The events are the public pysteps example data (``pySTEPS/pysteps-data`` at a
fixed commit).  Every file is listed with its sha256 in the packaged
``registry.txt`` (built from the archive's ``SHA256SUMS``), so a download is
verified before it is used and cached for later calls.

Environment variables (read at each call, never at import):

``XNOWCAST_DATA_URL``
    Base URL replacing the upstream one (a mirror or a local server); the
    registry paths (``radar/...``) are appended to it.  A ``file://`` URL or a
    plain folder path names a local mirror: its files are copied, then checked
    against their sha256 like downloads.
``XNOWCAST_CACHE_DIR``
    Cache folder (default: ``pooch.os_cache("xnowcast")``).

``open_dataset("sample")`` opens a small real sample shipped inside the
package (a crop of the RMI event, see ``xnowcast/data/make_sample.py``); it
needs no network.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import xarray as xr

from xnowcast.errors import DatasetError

__all__ = [
    "BASE_URL",
    "EVENTS",
    "SAMPLE",
    "DatasetInfo",
    "cache_dir",
    "fetch",
    "list_datasets",
    "open_dataset",
    "registry_files",
]

#: Upstream base URL: pysteps-data pinned to one commit.
BASE_URL = "https://github.com/pySTEPS/pysteps-data/raw/eaa59fb8f39205a3b1a0b44724ad8cd4a86d107e/"

_RMI_LICENCE = (
    "RMI (Royal Meteorological Institute of Belgium) data: no commercial use; all property "
    "and intellectual rights stay with the RMI; cite the source (RMI) in every publication"
)
_OPEN_LICENCE = (
    "public pysteps example data (pySTEPS/pysteps-data); cite the data provider ({who}) and pysteps"
)


@dataclass(frozen=True)
class DatasetInfo:
    """Description of one dataset of :func:`list_datasets`."""

    name: str
    source: str
    format: str
    grid: str
    step: str
    frames: int
    quantity: str
    licence: str
    prefix: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The description as a plain dict."""
        return asdict(self)


EVENTS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            name="mch-20150515",
            source="MeteoSwiss radar composite AQC, 2015-05-15 15:45-19:00 UTC",
            format="mch_gif",
            grid="640 x 710 cells, 1 km, Swiss CH1903/LV03 (CCS4 domain)",
            step="5 min",
            frames=40,
            quantity="precipitation, mm h-1 (from 5-minute accumulations x 12)",
            licence=_OPEN_LICENCE.format(who="MeteoSwiss"),
            prefix="radar/mch/20150515/",
        ),
        DatasetInfo(
            name="mch-20160711",
            source="MeteoSwiss radar composite AQC, 2016-07-11 20:45 - 07-12 00:00 UTC",
            format="mch_gif",
            grid="640 x 710 cells, 1 km, Swiss CH1903/LV03 (CCS4 domain)",
            step="5 min",
            frames=40,
            quantity="precipitation, mm h-1 (from 5-minute accumulations x 12)",
            licence=_OPEN_LICENCE.format(who="MeteoSwiss"),
            prefix="radar/mch/20160711/",
        ),
        DatasetInfo(
            name="fmi-20160928",
            source="Finnish Meteorological Institute radar composite, 2016-09-28 14:45-18:00 UTC",
            format="fmi_pgm",
            grid="1226 x 760 cells, ~1 km (999.7 m), polar stereographic",
            step="5 min",
            frames=40,
            quantity="reflectivity, dBZ",
            licence=_OPEN_LICENCE.format(who="Finnish Meteorological Institute"),
            prefix="radar/fmi/pgm/20160928/",
        ),
        DatasetInfo(
            name="knmi-20100826",
            source="KNMI radar composite (De Bilt, Den Helder), 2010-08-26 00:00-07:35 UTC",
            format="knmi_hdf5",
            grid="765 x 700 cells, 1 km, polar stereographic",
            step="5 min",
            frames=92,
            quantity="precipitation, mm h-1 (from 5-minute accumulations x 12)",
            licence=_OPEN_LICENCE.format(who="KNMI"),
            prefix="radar/KNMI/2010/08/",
        ),
        DatasetInfo(
            name="rmi-20210704",
            source="RMI radar QPE composite (Belgium), 2021-07-04 15:50-19:00 UTC",
            format="odim_hdf5",
            grid="700 x 700 cells, 1 km, Lambert conformal conic",
            step="5 min",
            frames=39,
            quantity="precipitation (rain rate), mm h-1",
            licence=_RMI_LICENCE,
            prefix="radar/rmi/radqpe/20210704/",
        ),
        DatasetInfo(
            name="bom-20201031",
            source=(
                "Australian Bureau of Meteorology Rainfields 3 (prcp-c10), radar 66 Mt Stapylton "
                "(Brisbane), 2020-10-31 00:00-23:50 UTC"
            ),
            format="bom_netcdf",
            grid="512 x 512 cells, 500 m, Albers conical equal area",
            step="10 min",
            frames=144,
            quantity=(
                "precipitation, mm h-1 (from 10-minute amounts in kg m-2 x 6; time = end of the "
                "accumulation)"
            ),
            licence=_OPEN_LICENCE.format(who="Australian Bureau of Meteorology"),
            prefix="radar/bom/prcp-c10/66/2020/10/31/",
        ),
        DatasetInfo(
            name="opera-20180824",
            source="OPERA pan-European composite (EUMETNET), 2018-08-24 18:00-23:45 UTC",
            format="odim_hdf5",
            grid="1900 x 2200 cells, 2 km, Lambert azimuthal equal area",
            step="15 min",
            frames=24,
            quantity="precipitation (rain rate), mm h-1; quality index in 'quality'",
            licence=_OPEN_LICENCE.format(who="EUMETNET OPERA"),
            prefix="radar/OPERA/20180824/",
        ),
        DatasetInfo(
            name="opera-cirrus-20241126",
            source=(
                "OPERA pan-European composite, CIRRUS generation (EUMETNET), "
                "2024-11-26 01:00-02:00 UTC"
            ),
            format="odim_hdf5",
            grid="3800 x 4400 cells, 1 km, Lambert azimuthal equal area",
            step="5 min",
            frames=13,
            quantity=(
                "reflectivity (maximum DBZH), dBZ; quality index in 'quality'; 130 MB a frame: "
                "open with chunks='auto'"
            ),
            licence=_OPEN_LICENCE.format(who="EUMETNET OPERA"),
            prefix="radar/OPERA/20241126/CIRRUS/",
        ),
        DatasetInfo(
            name="mrms-20190610",
            source="NOAA MRMS PrecipRate mosaic (United States), 2019-06-10 00:00-01:10 UTC",
            format="mrms_grib2",
            grid="7000 x 3500 cells, 0.01 degree latitude/longitude",
            step="2 min",
            frames=36,
            quantity="precipitation (rain rate), mm h-1",
            licence=_OPEN_LICENCE.format(who="NOAA NSSL MRMS"),
            prefix="mrms/2019/06/10/",
        ),
        DatasetInfo(
            name="fmi-geotiff-20160928",
            source=(
                "Finnish Meteorological Institute composite as GeoTIFF, 2016-09-28 14:45-15:10 UTC "
                "(the first frames of fmi-20160928)"
            ),
            format="fmi_geotiff",
            grid="4963 x 7316 cells, 250 m, ETRS89 / TM35FIN (EPSG:3067)",
            step="5 min",
            frames=6,
            quantity="reflectivity, dBZ",
            licence=_OPEN_LICENCE.format(who="Finnish Meteorological Institute"),
            prefix="radar/fmi/geotiff/20160928/",
        ),
    ]
}

#: The packaged sample (no network).
SAMPLE = DatasetInfo(
    name="sample",
    source=(
        "256 x 256 crop of rmi-20210704, 24 frames 15:50-17:45 UTC, packaged with xnowcast "
        "(xnowcast/data/sample.nc)"
    ),
    format="netcdf",
    grid="256 x 256 cells, 1 km, Lambert conformal conic",
    step="5 min",
    frames=24,
    quantity="precipitation (rain rate), mm h-1, quantised to 0.01",
    licence=_RMI_LICENCE,
)


def _names() -> list[str]:
    return [SAMPLE.name, *EVENTS]


def _info(name: str) -> DatasetInfo:
    if name == SAMPLE.name:
        return SAMPLE
    if name not in EVENTS:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(_names())}")
    return EVENTS[name]


def list_datasets() -> list[dict[str, Any]]:
    """Descriptions of the datasets :func:`open_dataset` knows.

    Returns
    -------
    list of dict
        One dict per dataset with ``name``, ``source``, ``format``, ``grid``,
        ``step``, ``frames``, ``quantity``, ``licence`` and ``prefix`` (the
        registry folder; empty for the packaged sample).
    """
    return [SAMPLE.as_dict()] + [info.as_dict() for info in EVENTS.values()]


def _registry() -> dict[str, str]:
    text = resources.files("xnowcast").joinpath("registry.txt").read_text()
    entries: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            path, digest = line.split()[:2]
            entries[path] = digest if ":" in digest else f"sha256:{digest}"
    return entries


def registry_files(name: str) -> list[str]:
    """Registry paths (``radar/...``) of the files of one event, sorted.

    Parameters
    ----------
    name : str
        An event name of :func:`list_datasets` (not ``"sample"``).
    """
    info = _info(name)
    if not info.prefix:
        raise DatasetError(f"{name!r} is packaged with xnowcast and has no files to fetch")
    return sorted(path for path in _registry() if path.startswith(info.prefix))


def cache_dir() -> Path:
    """The cache folder: ``$XNOWCAST_CACHE_DIR`` or ``pooch.os_cache("xnowcast")``."""
    import pooch

    configured = os.environ.get("XNOWCAST_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path(pooch.os_cache("xnowcast"))


def _base_url() -> str:
    url = os.environ.get("XNOWCAST_DATA_URL") or BASE_URL
    return url if url.endswith("/") else url + "/"


def _progressbar() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def fetch(
    name: str, files: list[str] | None = None, *, progressbar: bool | None = None
) -> list[Path]:
    """Download (or find in the cache) and verify the files of one event.

    Parameters
    ----------
    name : str
        Event name (see :func:`list_datasets`).
    files : list of str, optional
        A subset of :func:`registry_files` (default: all the event's files).
    progressbar : bool, optional
        Show download progress (default: when tqdm is installed).

    Returns
    -------
    list of pathlib.Path
        Local paths of the verified files, sorted.

    Raises
    ------
    DatasetError
        For an unknown name, a file not in the event, a failed download, or a
        file whose sha256 does not match the registry (it is not kept).
    """
    import pooch

    every = registry_files(name)
    wanted = every if files is None else list(files)
    outside = sorted(set(wanted) - set(every))
    if outside:
        raise DatasetError(f"{outside[0]!r} is not a file of {name!r}; see registry_files()")
    base = _base_url()
    fetcher = pooch.create(path=cache_dir(), base_url=base, registry=_registry(), retry_if_failed=1)
    show = _progressbar() if progressbar is None else progressbar
    local = _local_folder(base)
    if local is not None and not local.is_dir():
        raise DatasetError(
            f"XNOWCAST_DATA_URL={base!r} names the local mirror folder {str(local)!r}, which "
            "does not exist: point it at the folder holding the events' files (e.g. "
            "file:///data/pysteps-data/), or unset it to download."
        )
    paths = []
    for path in sorted(wanted):
        try:
            if local is not None:
                paths.append(Path(fetcher.fetch(path, downloader=_copy_from(local, base))))
            else:
                paths.append(Path(fetcher.fetch(path, progressbar=show)))
        except DatasetError:
            raise
        except ValueError as err:
            if "hash" in str(err).lower():  # pooch's hash mismatch
                raise DatasetError(
                    f"{path} from {base} failed its sha256 check and was discarded: {err}"
                ) from err
            raise DatasetError(
                f"could not fetch {path} from {base}: {str(err).rstrip('.')}. "
                "XNOWCAST_DATA_URL must be an "
                "http(s)/ftp URL, a file:// URL or the path of a local mirror folder."
            ) from err
        except OSError as err:  # requests' errors subclass OSError
            raise DatasetError(f"could not fetch {path} from {base}: {err}") from err
    return paths


def _local_folder(base_url: str) -> Path | None:
    """The folder of a local mirror (``file://`` URL or a plain path), else None."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parsed = urlparse(base_url)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a path (or a Windows drive)
        return Path(base_url).expanduser()
    return None


def _copy_from(folder: Path, base_url: str) -> Any:
    """A pooch downloader that copies from a local mirror folder (pooch, which knows no
    ``file://`` URLs, then checks the sha256 as for a download)."""

    def copy(url: str, output_file: Any, _pooch: Any) -> None:
        relative = url[len(base_url) :]
        source = folder / relative
        if not source.is_file():
            raise DatasetError(
                f"The local mirror {str(folder)!r} (XNOWCAST_DATA_URL) has no file "
                f"{relative!r}: it must hold the files under the same relative paths as "
                f"{BASE_URL}."
            )
        shutil.copyfile(source, output_file)

    return copy


def _sample_path() -> Path:
    return Path(str(resources.files("xnowcast").joinpath("data", "sample.nc")))


def open_dataset(name: str, *, chunks: Any = None) -> xr.Dataset:
    """Open a real radar dataset as a CF Dataset, fetching and verifying it first.

    Parameters
    ----------
    name : str
        ``"sample"`` (packaged, offline) or an event of :func:`list_datasets`:
        ``"mch-20150515"``, ``"mch-20160711"``, ``"fmi-20160928"``,
        ``"knmi-20100826"``, ``"rmi-20210704"``, ``"bom-20201031"``,
        ``"opera-20180824"``, ``"opera-cirrus-20241126"``, ``"mrms-20190610"``,
        ``"fmi-geotiff-20160928"``.
    chunks : optional
        ``None`` loads the values now; otherwise a dask-backed Dataset (see
        :func:`xnowcast.io.open_radar`; ``"auto"`` reads the large OPERA
        CIRRUS frames in spatial chunks).

    Returns
    -------
    xarray.Dataset
        Dims ``(time, y, x)``, variable ``precipitation`` (mm h-1) or
        ``reflectivity`` (dBZ), a ``crs`` grid mapping (a coordinate, so that
        ``ds["precipitation"]`` keeps it), and attributes naming the dataset and
        its licence.

    Raises
    ------
    DatasetError
        Unknown name (the message lists the valid ones) or a failed fetch.
    """
    from xnowcast.cf_output import grid_mappings_as_coords

    info = _info(name)
    if info is SAMPLE:
        path = _sample_path()
        if chunks is None:
            with xr.open_dataset(path) as ds:
                return grid_mappings_as_coords(ds.load())
        return grid_mappings_as_coords(xr.open_dataset(path, chunks=chunks))

    from xnowcast.io import open_radar

    ds = open_radar(fetch(name), format=info.format, chunks=chunks)
    ds.attrs.update(
        {
            "xnowcast_dataset": name,
            "license": info.licence,
            "references": f"{BASE_URL}{info.prefix}",
        }
    )
    return ds
