"""Training pairs, the supervised trainer, checkpoints and the shipped downscaling weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from xnowcast.errors import WeightsError
from xnowcast.training.pairs import (
    STATIC_NAMES,
    block_mean,
    coarsen_window,
    load_rain_rate,
    make_pairs,
    static_fields,
)
from xnowcast.training.supervised import (
    TrainConfig,
    evaluate,
    load_checkpoint,
    masked_mse,
    save_checkpoint,
    train,
)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "xnowcast" / "weights"

#: Shipped weights and their sha256 (also given to the registry).  The ``zsm-compact`` and
#: ``fczsm-compact`` weights of the trilinear-residual ZSM are retired (see docs/models.rst).
SHIPPED = {
    "zsm-flowprior.safetensors": "65669581546b35f4b276b77ca9bda79642bb57bbe0cdcda3cfc0a805e93d21a3",
    "fczsm-flowprior.safetensors": "166d15fdb7b5f1025d1f8dace0d3fc64938db3abd12b1cbc829b4201652c977c",
    "unet-compact.safetensors": "3e2cb92e19a52d027e26879048cf581fdd990c9d63d01d61c6f10f13439213c9",
    "unet3d-compact.safetensors": "f7658b57db595711a39f0c1ecd0fb470bfaa644bca4ad373d4b592811efd645f",
}


def _synthetic(t: int = 9, h: int = 16, w: int = 16) -> xr.DataArray:
    rng = np.random.default_rng(0)
    values = rng.gamma(0.6, 3.0, size=(t, h, w)).astype(np.float32)
    values[:, :4, :5] = np.nan  # outside radar range (not block aligned on x)
    values[3, 10, 10] = np.nan  # one missing cell in one frame
    return xr.DataArray(
        values,
        dims=("time", "y", "x"),
        coords={"x": 1000.0 * np.arange(w) + 500, "y": 1000.0 * np.arange(h)[::-1] + 500},
    )


def test_coarsen_window_block_means_and_mask():
    fine = _synthetic().values[:7]
    coarse, mask = coarsen_window(fine, factor=2, time_factor=2)
    assert coarse.shape == (4, 8, 8) and mask.shape == (7, 16, 16)
    np.testing.assert_allclose(coarse[1, 5, 6], fine[2, 10:12, 12:14].mean(), rtol=1e-6)
    # A block with one missing cell is missing; its fine cells leave the loss.
    assert np.isnan(coarse[0, 1, 2]) and np.isfinite(coarse[0, 2, 2])
    assert not mask[:, :4, :6].any()  # the coarse blocks touching the NaN area
    assert mask[0, 4:, 6:].all()
    # Frame 3 (inserted, between coarse 1 and 2) misses the cell itself; frames 2 and 4
    # are originals with that cell observed; frame 3 loses only cell (10, 10).
    assert not mask[3, 10, 10] and mask[3, 10, 11] and mask[2, 10, 10] and mask[4, 10, 10]


def test_block_mean_needs_whole_blocks():
    assert block_mean(np.ones((2, 4, 6)), 2).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="does not split"):
        block_mean(np.ones((5, 6)), 2)


def test_static_fields_from_coarse_data():
    coarse = np.ones((3, 2, 3))
    coarse[1, 0, 0] = np.nan
    x = np.array([10.0, 12.0, 14.0])  # coarse centres, step 2
    y = np.array([5.0, 3.0])  # north-up: y decreases
    s = static_fields(coarse, 2, x, y)
    assert s.shape == (len(STATIC_NAMES), 4, 6)
    np.testing.assert_array_equal(s[0, :2, :2], 0)
    assert s[0].sum() == 24 - 4
    # Fine centres 9.5 ... 14.5 scaled to [-1, 1]; north (largest y) is +1.
    np.testing.assert_allclose(s[1, 0], np.linspace(-1, 1, 6))
    np.testing.assert_allclose(s[2, :, 0], np.linspace(1, -1, 4))


def test_make_pairs_from_a_dataarray():
    da = _synthetic(t=13, h=24, w=24)
    pairs = make_pairs(da, crop=4, max_pairs=None, min_valid_fraction=0.0, event="synthetic")
    assert len(pairs) > 0 and set(pairs.events) == {"synthetic"}
    assert pairs.coarse.shape[1:] == (4, 1, 4, 4)
    assert pairs.fine.shape[1:] == (7, 1, 8, 8)
    assert pairs.static.shape[1:] == (3, 8, 8)
    assert torch.isfinite(pairs.coarse).all() and torch.isfinite(pairs.fine).all()
    # Every coarse value is the block mean of the fine frames it was cut from.
    fine_orig = pairs.fine[:, ::2, 0]
    blocks = fine_orig.reshape(len(pairs), 4, 4, 2, 4, 2).mean((3, 5))
    known = pairs.mask[:, ::2, 0].reshape(len(pairs), 4, 4, 2, 4, 2).all(5).all(3)
    torch.testing.assert_close(blocks[known], pairs.coarse[:, :, 0][known])
    # Masked cells are where the data were missing; the coverage channel agrees.
    assert (~pairs.mask).any()
    assert (pairs.static[:, 0] == 0).any() and (pairs.static[:, 0] == 1).any()


def test_masked_mse_ignores_masked_cells():
    pred = torch.tensor([1.0, 2.0, 100.0])
    target = torch.tensor([0.0, 2.0, 0.0])
    mask = torch.tensor([True, True, False])
    assert float(masked_mse(pred, target, mask)) == pytest.approx(0.5)


def _tiny_real_pairs(shared_data: Path, n: int):
    da = load_rain_rate(str(shared_data / "radar/mch/20160711/*"))
    return make_pairs(da.isel(time=slice(0, 12)), crop=8, max_pairs=n, seed=3, dry_share=0)


@pytest.mark.slow
def test_tiny_zsm_overfits_a_tiny_real_batch(shared_data, tmp_path):
    torch.manual_seed(0)
    from xnowcast.registry import build_model

    pairs = _tiny_real_pairs(shared_data, 2)
    model = build_model("zsm", "flow-tiny")
    cfg = TrainConfig(
        steps=80, batch_size=2, lr=5e-3, augment=False, val_every=0, log_every=1, grad_clip=None
    )
    # Two 8x8-cell crops of rain; batches of 2 drawn from them.
    result = train(model, pairs, None, cfg, progress=False)
    losses = [v for _, v in result["training"]["loss_history"]]
    with torch.no_grad():
        pred = model.forward_z(pairs.coarse, None)
        final = float(masked_mse(pred, model.transform(pairs.fine), pairs.mask))
        first = build_model("flow")(pairs.coarse)
        start = float(masked_mse(model.transform(first), model.transform(pairs.fine), pairs.mask))
    assert losses[0] == pytest.approx(start, rel=0.5)
    # The loss starts at the flow baseline's error and falls well below it.
    assert final < 0.4 * start, (start, final)


def test_checkpoint_round_trip(tmp_path):
    from xnowcast.registry import build_model

    torch.manual_seed(0)
    model = build_model("fczsm", "flow-tiny")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    path = tmp_path / "fczsm-tiny.safetensors"
    sha = save_checkpoint(model, path, {"events": ["x"], "steps": 3}, {"model": {"mse": 1.0}})
    loaded = load_checkpoint(path, sha256=sha)
    assert loaded.metadata["model"] == "fczsm"
    assert loaded.metadata["config"]["static_names"] == list(STATIC_NAMES)
    assert loaded.metadata["training"]["steps"] == 3
    frames = torch.rand(1, 4, 1, 8, 8) * 10
    static = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(frames, static), model.eval()(frames, static))
    with pytest.raises(WeightsError, match="sha256"):
        load_checkpoint(path, sha256="0" * 64)


def _sample_windows():
    """Two windows of the bundled RMI sample: 4 coarse frames (2x block mean, every other
    frame) of a rainy 128 x 128 km crop, the 7 native frames as targets, static fields."""
    import xnowcast

    fine = xnowcast.open_dataset("sample").precipitation
    values = np.nan_to_num(fine.values.astype(np.float32))
    x, y = fine["x"].values, fine["y"].values
    static = static_fields(
        block_mean(values[::2], 2), 2, x[::2] + (x[1] - x[0]) / 2, y[::2] + (y[1] - y[0]) / 2
    )
    rows, cols = slice(64, 192), slice(0, 128)
    coarse, fines = [], []
    for start in (0, 6):
        window = values[start : start + 7, rows, cols]
        coarse.append(coarsen_window(window, 2, 2)[0])
        fines.append(window)
    return (
        torch.from_numpy(np.stack(coarse)).unsqueeze(2),
        torch.from_numpy(np.stack(fines)).unsqueeze(2),
        torch.from_numpy(static[:, rows, cols]).unsqueeze(0).expand(2, -1, -1, -1),
    )


@pytest.mark.parametrize("filename", sorted(SHIPPED))
def test_shipped_weights_load_and_beat_trilinear_on_the_sample(filename):
    from xnowcast.registry import build_model
    from xnowcast.training.pairs import PairSet

    path = WEIGHTS_DIR / filename
    model = load_checkpoint(path, sha256=SHIPPED[filename])
    meta = model.metadata
    assert meta["training"]["holdout"] == "rmi-20210704"
    assert not any(e.startswith("rmi") for e in meta["training"]["events"])
    assert meta["config"]["factor"] == 2 and meta["config"]["time_factor"] == 2
    assert path.stat().st_size < 5e6
    coarse, fine, static = _sample_windows()
    pairs = PairSet(coarse, fine, torch.ones_like(fine, dtype=torch.bool), static)
    scores = evaluate(model, pairs, batch_size=1)
    base = evaluate(build_model("trilinear"), pairs, batch_size=1)
    assert scores["mse"] < base["mse"], (scores, base)
