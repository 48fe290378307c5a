"""DGMR's fixes for issue 14, one test per cause: it stands on extrapolation (no first-step
jump), has no checkerboard, no edge blobs, and a latent that reaches the forecast."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xnowcast.errors import ModelError  # noqa: E402
from xnowcast.models import dgmr  # noqa: E402
from xnowcast.models.layers import depth_to_space  # noqa: E402

TINY = {"context_channels": 16, "latent_channels": 32, "discriminator_channels": 4}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sample_frames() -> torch.Tensor:
    """The first 4 frames of the packaged real RMI sample, 128 x 128 pixels, mm/h."""
    import xnowcast.datasets as xd

    da = xd.open_dataset("sample")["precipitation"]
    arr = np.nan_to_num(da.isel(time=slice(0, 4)).values.astype(np.float32))[:, :128, :128]
    assert (arr[-1] > 1.0).mean() > 0.01  # it rains in the crop
    return torch.from_numpy(arr)[None, :, None]


def generator(seed: int = 0, head_std: float = 0.0, **config) -> dgmr.Generator:
    """A tiny untrained generator; ``head_std`` > 0 gives its zero-initialised head random weights."""
    torch.manual_seed(seed)
    g = dgmr.build_generator({**TINY, **config}).eval()
    if head_std:
        torch.nn.init.normal_(g.sampler.out_conv.weight, std=head_std)
    return g


def nyquist_fraction(fields: np.ndarray) -> float:
    """Share of the (mean-removed) power in the Nyquist row and column of the 2-D spectrum."""
    f = fields - fields.mean(axis=(-2, -1), keepdims=True)
    power = np.abs(np.fft.fft2(f)) ** 2
    ny, nx = f.shape[-2] // 2, f.shape[-1] // 2
    return float((power[..., ny, :].sum() + power[..., :, nx].sum()) / power.sum())


def test_untrained_generator_is_the_extrapolation_nowcast(sample_frames: torch.Tensor) -> None:
    g = generator()
    with torch.inference_mode():
        y = g(sample_frames, 6, generator=torch.Generator().manual_seed(0))
        ext = g.extrapolation(sample_frames, 6)
    torch.testing.assert_close(y, torch.nan_to_num(ext, nan=0.0), atol=1e-4, rtol=1e-4)
    # no first-step jump: the rain of the first lead is that of the last input
    ratio = float(y[:, 0].mean() / sample_frames[:, -1].mean())
    assert 0.9 < ratio < 1.1, ratio
    # and the rain moves: the forecast differs from persistence
    assert float((y[:, 5] - sample_frames[:, -1]).abs().mean()) > 0.05


def test_resize_conv_head_has_no_checkerboard(sample_frames: torch.Tensor) -> None:
    g = generator(head_std=0.3)
    feat = torch.randn(3, g.sampler.out_bn.num_features, 32, 32, generator=torch.Generator())
    with torch.inference_mode():
        head = g.sampler.head(feat).numpy()
        # the paper's head: a 1x1 convolution to 4 channels and depth-to-space
        sub_pixel = torch.nn.Conv2d(feat.shape[1], 4, 1)
        paper = depth_to_space(sub_pixel(torch.relu(feat))).numpy()
        forecast = g(sample_frames, 6, generator=torch.Generator().manual_seed(0))
    assert nyquist_fraction(paper) > 0.1  # the measure sees a checkerboard
    assert nyquist_fraction(head) < 0.01
    # a full forecast with a random (untrained) residual: no more Nyquist power than radar's
    radar = nyquist_fraction(sample_frames[0, :, 0].numpy())
    assert nyquist_fraction(forecast[0, :, 0].numpy()) < 3 * radar


@pytest.mark.parametrize(("padding", "uniform"), [("replicate", True), ("zeros", False)])
def test_uniform_rain_stays_uniform_up_to_the_borders(padding: str, uniform: bool) -> None:
    """Edge and corner blobs come from zero padding; replicate padding has none."""
    g = generator(head_std=0.3, padding_mode=padding)
    frames = torch.full((1, 4, 1, 96, 96), 3.0)
    noise = torch.full(g.sample_noise(frames).shape, 0.5)
    with torch.inference_mode():
        y = g(frames, 4, noise=noise)[0, :, 0]
    spread = float((y.amax(dim=(-2, -1)) - y.amin(dim=(-2, -1))).max() / y.mean())
    if uniform:
        assert spread < 1e-4, spread
    else:
        assert spread > 1e-2, spread


def test_the_latent_reaches_the_forecast_at_fine_scales(sample_frames: torch.Tensor) -> None:
    g = generator(head_std=0.3)
    noise = g.sample_noise(sample_frames, torch.Generator().manual_seed(0))
    changed = noise.clone()
    changed[..., 10:12, 10:12] += 3.0  # an 8 x 8 pixel patch of the latent field
    with torch.inference_mode():
        a = g(sample_frames, 3, noise=noise)[0, 0, 0]
        b = g(sample_frames, 3, noise=changed)[0, 0, 0]
    diff = (a - b).abs()
    assert float(diff.max()) > 1e-3
    # the change is strongest near the perturbed patch (the 1/4-scale injection is local)
    near = float(diff[32:56, 32:56].mean())
    far = float(diff[96:, 96:].mean())
    assert near > 3 * far, (near, far)


def test_noise_for_a_tile_is_cut_from_the_domain_field() -> None:
    g = generator()
    frames = torch.zeros(2, 4, 1, 128, 192)
    noise = g.sample_noise(frames, torch.Generator().manual_seed(0))
    assert noise.shape == (2, 8, 32, 48)
    tile = g.crop_noise(noise, slice(64, 128), slice(32, 128))
    torch.testing.assert_close(tile, noise[..., 16:32, 8:32])
    with pytest.raises(ModelError, match="multiples of 32"):
        g.crop_noise(noise, slice(48, 112), slice(0, 64))
    with pytest.raises(ModelError, match="noise must have shape"):
        g(frames, 2, noise=noise[..., :-1])


def test_configs_reject_unknown_base_and_padding() -> None:
    with pytest.raises(ValueError, match="base"):
        dgmr.resolve_config({"base": "persistence"})
    with pytest.raises(ValueError, match="padding_mode"):
        dgmr.resolve_config({"padding_mode": "circular"})
    g = generator(base="none")
    frames = torch.rand(1, 4, 1, 64, 64) * 5
    with torch.inference_mode():
        assert float(g(frames, 2).abs().max()) == 0.0  # no base, untrained head: no rain


def _build_tiny(config: dict | None = None) -> dgmr.Generator:
    return generator(head_std=0.3)


@pytest.fixture
def tiny_dgmr_registered(monkeypatch: pytest.MonkeyPatch):
    """Register ``dgmr-tiny`` (an untrained tiny DGMR) and record the latent of every tile."""
    import sys
    import types

    from xnowcast import registry

    module = types.ModuleType("_xnowcast_tiny_dgmr")
    module.build = _build_tiny  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    spec = registry.ModelSpec(
        name="dgmr-tiny",
        task="nowcast",
        builder=f"{module.__name__}:build",
        summary="test double",
        reference="-",
        time_step_minutes=5.0,
        stochastic=True,
        input_frames=4,
    )
    registry.register(spec)
    tiles: list[tuple[slice, slice, torch.Tensor]] = []
    real = dgmr.Generator.crop_noise

    def crop_noise(self, noise, ys, xs):
        out = real(self, noise, ys, xs)
        tiles.append((ys, xs, out.clone()))
        return out

    monkeypatch.setattr(dgmr.Generator, "crop_noise", crop_noise)
    try:
        yield tiles
    finally:
        registry.unregister(spec.name, spec.task)
        sys.modules.pop(module.__name__, None)


def test_tiles_of_a_member_share_one_latent_field(tiny_dgmr_registered) -> None:
    import xnowcast
    import xnowcast.datasets as xd

    tiles = tiny_dgmr_registered
    da = xd.open_dataset("sample")["precipitation"].isel(time=slice(0, 4), y=slice(0, 128))
    da = da.isel(x=slice(0, 128))
    with xnowcast.set_options(tile_size=64, tile_overlap=32):
        fc = da.nowcast.predict(model="dgmr-tiny", steps=2, members=2, seed=1, progress=False)
    assert fc.sizes["member"] == 2 and bool(np.isfinite(fc.values).any())
    assert len(tiles) == 9  # 3 x 3 tiles of 64 with a stride of 32, one batch of 2 members
    field = torch.full((2, 8, 32, 32), float("nan"))
    for ys, xs, noise in tiles:
        part = field[..., ys.start // 4 : ys.stop // 4, xs.start // 4 : xs.stop // 4]
        seen = ~torch.isnan(part)
        # where tiles overlap they read the same latent values
        torch.testing.assert_close(noise[seen], part[seen])
        part.copy_(noise)
    assert not torch.isnan(field).any()
    assert not torch.equal(field[0], field[1])  # members have their own fields
