"""Sphinx configuration of the xnowcast documentation.

Build (what ``ci/test.sh`` runs; warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The gallery (``examples/plot_*.py``) is executed at every build on the real
radar sample packaged with xnowcast, so a broken example fails the build.

The build machine and CI have no internet: intersphinx links to xarray, dask,
pint, torch, numpy and Python are only set up when ``XNOWCAST_DOCS_INTERSPHINX=1``
(a build with network access), so an offline build has nothing to fetch.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# The gallery runs torch models on a shared machine: OpenMP threads that spin
# while waiting for work multiply run times there (10x measured on ZSM), so
# they sleep instead.  Set before torch (and its OpenMP runtime) is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import matplotlib

matplotlib.use("Agg")

import sphinx_autosummary_accessors

import xnowcast  # registers the .nowcast and .downscale accessors autodoc documents

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

# -- project ---------------------------------------------------------------------------

project = "xnowcast"
author = "The xnowcast developers"
copyright = f"{time.gmtime().tm_year}, {author}"
release = xnowcast.__version__
version = ".".join(release.split(".")[:2])

# -- extensions ------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_autosummary_accessors",
    "sphinx_gallery.gen_gallery",
    "xnowcast_docs",  # docs/_ext/xnowcast_docs.py: model tables read from the registry
]

templates_path = ["_templates", sphinx_autosummary_accessors.templates_path]
exclude_patterns = ["_build", "generated/*.inc.rst", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"

# -- autodoc / autosummary / napoleon --------------------------------------------------

autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": False, "show-inheritance": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_preprocess_types = False

# -- intersphinx (only with network access) --------------------------------------------

if os.environ.get("XNOWCAST_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "xarray": ("https://docs.xarray.dev/en/stable", None),
        "dask": ("https://docs.dask.org/en/stable", None),
        "pint": ("https://pint.readthedocs.io/en/stable", None),
        "torch": ("https://pytorch.org/docs/stable", None),
    }
else:
    intersphinx_mapping = {}
intersphinx_timeout = 10

# -- sphinx-gallery --------------------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",  # execute every example
    "ignore_pattern": r"__init__\.py|/_",
    "abort_on_example_error": True,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": (True, "jshtml"),  # embedded frames: no ffmpeg needed
    # matplotlib's state, then quiet CPU-only seeded settings (docs/_ext/xnowcast_docs.py)
    "reset_modules": ("matplotlib", "xnowcast_docs.reset_example"),
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "min_reported_time": 0,
}

# -- HTML ------------------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"xnowcast {release}"
html_static_path = ["_static"]
html_show_sourcelink = False
html_theme_options = {
    "navigation_depth": 2,
    "show_toc_level": 2,
    "navbar_align": "left",
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "light"}

