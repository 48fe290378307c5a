"""``srgan``: the consistent baseline it stands on, exact block means, NaN, factors, training."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import xnowcast
from xnowcast.errors import ModelError
from xnowcast.models.flow import consistent_upsample
from xnowcast.models.srgan import PatchDiscriminator, build_srgan
from xnowcast.registry import get_spec, weights_metadata


@pytest.fixture(scope="module")
def radar() -> xr.DataArray:
    """The real RMI sample (held-out event), a rainy 64 x 64 km crop, 4 frames."""
    da = xnowcast.open_dataset("sample").precipitation
    return da.isel(time=slice(-4, None), y=slice(64, 128), x=slice(96, 160)).load()


def coarse(da: xr.DataArray, factor: int) -> xr.DataArray:
    return da.coarsen(y=factor, x=factor).mean().assign_attrs(da.attrs)


def test_untrained_generator_is_the_back_projected_bicubic() -> None:
    frames = torch.rand(2, 3, 1, 12, 10) * 20
    for factor in (2, 4):
        net = build_srgan("tiny", factor=factor, time_factor=1)
        out = net(frames)
        base = consistent_upsample(frames.view(6, 1, 12, 10), factor, 3)
        assert out.shape == (2, 3, 1, 12 * factor, 10 * factor)
        torch.testing.assert_close(
            out.view(6, 1, 12 * factor, 10 * factor), base, rtol=1e-4, atol=1e-4
        )


def test_block_means_equal_the_input_whatever_the_weights() -> None:
    net = build_srgan("tiny", factor=4, time_factor=1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # a generator far from the baseline
    frames = torch.rand(1, 2, 1, 8, 8) * 30
    frames[..., :2, :2] = 0  # dry cells stay dry
    out = net(frames)
    means = torch.nn.functional.avg_pool2d(out.view(2, 1, 32, 32), 4).view_as(frames)
    torch.testing.assert_close(means, frames, rtol=1e-5, atol=1e-5)
    assert bool((out >= 0).all())
    assert not torch.allclose(
        out.view(2, 1, 32, 32), consistent_upsample(frames.view(2, 1, 8, 8), 4)
    )


def test_shipped_srgan_on_held_out_radar_keeps_block_means_and_nan(radar: xr.DataArray) -> None:
    spec = get_spec("srgan")
    meta = weights_metadata(spec)
    assert meta["training"]["holdout"] == "rmi-20210704"
    assert "rmi-20210704" not in meta["training"]["events"]
    low = coarse(radar, 4)
    low[1, :2, :3] = np.nan
    fine = low.downscale(model="srgan", factor=4, time_factor=1, progress=False)
    assert fine.shape == (4, 64, 64) and fine.attrs["units"] == radar.attrs["units"]
    assert fine.attrs["xnowcast_model"] == "srgan"
    assert np.isnan(fine[1, :8, :12]).all() and np.isfinite(fine[0]).all()
    back = fine.coarsen(y=4, x=4).mean()
    known = np.isfinite(low.values)
    np.testing.assert_allclose(back.values[known], low.values[known], rtol=1e-4, atol=1e-4)
    # the learned residual changes the field: not the back-projected bicubic (= untrained)
    base = low.downscale(model="srgan", weights=None, factor=4, time_factor=1, progress=False)
    assert float(np.nanmax(np.abs(fine - base))) > 0.1


def test_factor_two_and_time_by_flow(radar: xr.DataArray) -> None:
    low = coarse(radar, 2)
    one = low.downscale(model="srgan", factor=2, time_factor=1, progress=False)
    two = low.downscale(model="srgan", factor=2, time_factor=2, progress=False)
    assert one.shape == (4, 64, 64) and two.shape == (7, 64, 64)
    np.testing.assert_allclose(two.values[::2], one.values, rtol=1e-5, atol=1e-5)
    with pytest.raises(ModelError, match="factor"):
        low.downscale(model="srgan", factor=3, time_factor=1, progress=False)


def test_discriminator_and_a_few_training_steps(tmp_path: Path) -> None:
    """The run trains every phase on (synthetic) events, resumes, and its weights load."""
    from xnowcast.testing import moving_storm
    from xnowcast.training.srgan_run import run

    data = tmp_path / "data"
    data.mkdir()
    for seed, name in enumerate(("train-a", "held-out")):
        storm = moving_storm(frames=14, shape=(96, 96), velocity=(1.0, 2.0), seed=seed)
        np.save(data / f"{name}.npy", (storm.values * 4).astype(np.float32))
    kwargs = {
        "data_root": tmp_path,
        "workdir": tmp_path,
        "encoder_config": "tiny",
        "generator_config": "tiny",
        "checkpoint_every": 2,
        "val_every": 2,
        "events": {"train-a": "-"},
        "holdout": ("held-out", "-"),
    }
    first = run(cpu_minutes=0.02, **kwargs)
    assert first["steps"]["encoder"] > 0 and first["steps"]["pretrain"] > 0
    second = run(cpu_minutes=0.04, **kwargs)
    assert second["steps"]["gan"] > first["steps"]["gan"]
    assert second["curves"]["gan"] and "content" in second["curves"]["gan"][-1][1]
    weights = tmp_path / "srgan-content_adv.safetensors"
    frames = np.random.default_rng(0).random((1, 2, 1, 8, 8)).astype(np.float32)
    net = xnowcast.load_model("srgan", weights=weights, factor=4, time_factor=1)
    assert net(torch.from_numpy(frames)).shape == (1, 2, 1, 32, 32)
    logits = PatchDiscriminator(8)(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 8, 8))
    assert logits.shape == (2, 1, 4, 4)
    # an ablation variant reuses the trained encoder (no encoder phase)
    (tmp_path / "mse_adv").mkdir()
    shutil.copytree(data, tmp_path / "mse_adv" / "data")
    variant = run(
        cpu_minutes=0.04,
        variant="mse_adv",
        encoder_weights=str(tmp_path / "atmodist-radar.safetensors"),
        **{**kwargs, "workdir": tmp_path / "mse_adv"},
    )
    assert variant["steps"]["encoder"] == 0 and variant["steps"]["pretrain"] > 0
    assert "content" not in variant["curves"]["gan"][-1][1]
    assert (tmp_path / "mse_adv" / "srgan-mse_adv.safetensors").is_file()
