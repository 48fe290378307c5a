"""Issue 14, the wet drift with lead time: rain that flows into a training crop from outside.

A nowcast of a crop cannot know the rain that enters it through its upstream
border.  Scored, that rain teaches the generator to put rain wherever the
extrapolation is dry, more so at long leads; on a large domain, where most of
those pixels are truly dry, its rain volume then grows with lead time.  Training
leaves these pixels out (``gan_step(..., inflow_mask=True)``).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xnowcast.models import dgmr  # noqa: E402
from xnowcast.training.data import CropBatch  # noqa: E402
from xnowcast.training.gan_step import gan_step, scored_targets  # noqa: E402

TINY = {"context_channels": 16, "latent_channels": 32, "discriminator_channels": 4}
SPEED = 3  # px per 5-min frame, eastward (+x)
SIZE = 128
FRONT = 56  # the rain front's x in the last input frame


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def moving_front(leads: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Textured rain west of a front, dry east of it, all moving east at :data:`SPEED`.

    Returns inputs ``(1, 4, 1, H, W)`` and targets ``(1, leads, 1, H, W)`` in mm/h:
    crops of a larger plane, so the targets hold the rain that enters the crop
    through its western border.
    """
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter

    width = SIZE + SPEED * (leads + 8)
    texture = gaussian_filter(rng.gamma(2.0, 1.0, (SIZE, width)), 2.0) * 3.0
    plane = np.where(np.arange(width)[None, :] < width - SIZE + FRONT, texture, 0.0)
    frames = []
    for k in range(-3, leads + 1):  # frame k: the plane moved by SPEED * k
        x0 = width - SIZE - SPEED * k
        frames.append(plane[:, x0 - SPEED * 3 : x0 - SPEED * 3 + SIZE])
    seq = torch.from_numpy(np.stack(frames).astype(np.float32))[None, :, None]
    return seq[:, :4], seq[:, 4:]


def test_reach_marks_the_pixels_whose_rain_comes_from_outside() -> None:
    leads = 6
    x, y = moving_front(leads)
    g = dgmr.build_generator(TINY)
    base, reach = g.extrapolate_reach(x, leads)
    for t in range(leads):
        strip = SPEED * (t + 1)  # these western columns came from outside the crop
        unknown = (~reach[0, t, 0]).float().mean(dim=0)  # per column
        assert unknown[: int(0.8 * strip)].min() > 0.9  # (the motion found is ~5 % slow)
        assert unknown[strip + 2 :].max() < 0.1
        # and where it is known the extrapolation is right: the motion was found
        known = reach[0, t, 0]
        err = (base[0, t, 0] - y[0, t, 0]).abs()[known].mean() / y[0, t, 0][known].mean()
        assert err < 0.35


def test_scored_targets_of_steady_moving_rain_carry_no_volume_growth() -> None:
    """The training targets of rain that only moves: as much rain as the extrapolation.

    Unmasked, the targets hold the rain that entered the crop, an apparent
    growth over the extrapolation that increases with lead time and that the
    generator learns as a wet drift.
    """
    leads = 6
    x, y = moving_front(leads)
    ones = torch.ones_like(y, dtype=torch.bool)
    batch = CropBatch(x, y, ones, torch.ones_like(x, dtype=torch.bool), [{}])
    g = dgmr.build_generator(TINY)
    growth = {}
    for mask in (True, False):
        base, target, scored = scored_targets(g, batch, leads, inflow_mask=mask)
        assert bool((target[~scored] == 0).all())
        vol_base = (base * scored).sum(dim=(0, 2, 3, 4))
        growth[mask] = (target.sum(dim=(0, 2, 3, 4)) / vol_base).numpy()
    np.testing.assert_allclose(growth[True], 1.0, atol=0.05)
    assert growth[False][0] > 1.03 and growth[False][-1] > 1.2
    assert np.all(np.diff(growth[False]) > 0)  # more rain from outside at every lead
    missing = torch.ones_like(y, dtype=torch.bool)
    missing[..., :4, :] = False  # missing targets stay out, with or without the mask
    batch = CropBatch(x, y, missing, batch.input_valid, [{}])
    for mask in (True, False):
        assert not bool(scored_targets(g, batch, leads, inflow_mask=mask)[2][..., :4, :].any())


def test_a_training_step_reports_the_share_of_scored_pixels() -> None:
    leads = 4
    x, y = moving_front(leads)
    ones = torch.ones_like(y, dtype=torch.bool)
    batch = CropBatch(x, y, ones, torch.ones_like(x, dtype=torch.bool), [{}])
    torch.manual_seed(0)
    g, d = dgmr.build_generator(TINY), dgmr.build_discriminator(TINY)
    opts = [torch.optim.Adam(m.parameters(), lr=1e-4, betas=(0.0, 0.999)) for m in (g, d)]
    inflow = sum(SPEED * (t + 1) for t in range(leads)) / (SIZE * leads)
    for mask in (True, False):
        out = gan_step(g, d, *opts, batch, lead_steps=leads, grid_samples=1, inflow_mask=mask)
        assert out["scored"] == pytest.approx(1.0 - inflow if mask else 1.0, abs=0.02)
