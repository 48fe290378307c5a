"""The learned AtmoDist distance between rain-rate fields (``verify(metrics=["atmodist"])``).

The distance is the mean squared difference of the representations that a
self-supervised radar encoder (:mod:`xnowcast.models.atmodist`, trained to tell
the time lag between two radar patches) gives the two fields, in units of its
mean over pairs of radar patches 60 minutes apart on the training events:

* ``0``: identical fields (exactly);
* ``1``: as different as a radar field and the same place an hour later;
* cells where both fields are dry add 0, so a mostly dry domain scores lower
  than its rainy part alone.

It judges structure at the scales of its receptive field (about 1-20 cells of
1 km, the scales radar rain evolves on within an hour): a smooth field scores
far from a textured observation even when its mean-squared error is small.
The encoder was trained on 1 km fields in mm/h: fields on other grids can be
scored, but the scale of the number then has no calibration.

Torch is imported when a distance is computed, never at import.
"""

from __future__ import annotations

import numpy as np

__all__ = ["atmodist_terms_array"]

#: Fields scored per forward pass of the encoder.
_CHUNK = 8


def atmodist_terms_array(a: np.ndarray, b: np.ndarray, weights: str | None = None) -> np.ndarray:
    """Learned distance of each 2-D field of ``a`` to the matching one of ``b`` and whether known.

    ``a`` and ``b`` are rain rate in mm/h, last two axes (Y, X), NaN missing
    (left out: see :meth:`~xnowcast.models.atmodist.RadarEncoder.distance`).
    Returns shape ``(..., 2)``: ``[distance (0 if unknown), 1 if known else 0]``,
    so that sums over fields give a mean.  ``weights``: the encoder's weights file
    (default: the shipped one; see :func:`~xnowcast.models.atmodist.load_encoder`).
    """
    import torch

    from xnowcast.models.atmodist import load_encoder

    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    a, b = np.broadcast_arrays(a, b)
    lead, (ny, nx) = a.shape[:-2], a.shape[-2:]
    flat_a, flat_b = a.reshape(-1, 1, ny, nx), b.reshape(-1, 1, ny, nx)
    encoder = load_encoder(weights)
    out = np.zeros((flat_a.shape[0], 2), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, flat_a.shape[0], _CHUNK):
            ta = torch.from_numpy(np.ascontiguousarray(flat_a[start : start + _CHUNK]))
            tb = torch.from_numpy(np.ascontiguousarray(flat_b[start : start + _CHUNK]))
            known = torch.isfinite(ta) & torch.isfinite(tb)
            dist = encoder.distance(ta, tb, known).double().numpy()
            finite = np.isfinite(dist)
            out[start : start + len(dist), 0] = np.where(finite, dist, 0.0)
            out[start : start + len(dist), 1] = finite
    return out.reshape(*lead, 2)
