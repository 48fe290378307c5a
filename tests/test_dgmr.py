"""DGMR modules: shapes, determinism, the ConvGRU maths, parameter counts, shipped weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from xnowcast.models import dgmr  # noqa: E402
from xnowcast.models.layers import (  # noqa: E402
    ConvGRU,
    DBlock,
    GBlock,
    LBlock,
    SpatialAttention,
    depth_to_space,
    space_to_depth,
)

TINY = {"context_channels": 16, "latent_channels": 32, "discriminator_channels": 4}
WEIGHTS = Path(dgmr.__file__).resolve().parents[1] / "weights" / "dgmr-small.safetensors"

#: Parameter counts of the published architecture at the ``paper`` widths (reported in
#: the docs).  The public PyTorch port counts 53.6 M / 44.7 M because it also creates
#: 1x1 shortcut convolutions that its equal-width blocks never use (0.79 M in the
#: generator, 2 x 0.59 M in the discriminators).
PAPER_GENERATOR_PARAMETERS = 52_782_157
PAPER_DISCRIMINATOR_PARAMETERS = 43_523_426
#: What xnowcast's generator adds to it: every ConvGRU also reads the extrapolated
#: frame's features and the latent noise (3 gate convolutions of 3x3 over
#: ``feature + noise`` more input channels), and the output head is a 3x3
#: convolution to 1 channel instead of a 1x1 convolution to 4.
EXTRA_GRU_PARAMETERS = sum(
    3 * 9 * (feat + 8) * hid for feat, hid in ((192, 384), (96, 192), (48, 96), (24, 48))
)
EXTRA_HEAD_PARAMETERS = (9 * 48 + 1) - (48 * 4 + 4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def with_random_head(g: dgmr.Generator) -> dgmr.Generator:
    """The output head starts at zero (the forecast is the extrapolation): give it weights."""
    torch.nn.init.normal_(g.sampler.out_conv.weight, std=0.3)
    return g


@pytest.fixture(scope="module")
def tiny() -> dgmr.Generator:
    torch.manual_seed(0)
    return with_random_head(dgmr.build_generator(TINY).eval())


def rain(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 4, 1, h, w, generator=g) ** 4 * 20.0


@pytest.mark.parametrize(("h", "w", "steps"), [(32, 32, 1), (64, 96, 3), (96, 64, 7)])
def test_generator_shapes_dtype_range(tiny: dgmr.Generator, h: int, w: int, steps: int) -> None:
    with torch.inference_mode():
        y = tiny(rain(2, h, w), steps, generator=torch.Generator().manual_seed(1))
    assert y.shape == (2, steps, 1, h, w)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert (y >= 0).all()  # ReLU output: a rain rate


def test_generator_contract_attributes(tiny: dgmr.Generator) -> None:
    assert tiny.input_frames == 4
    assert tiny.spatial_multiple == 32
    assert tiny.config["context_channels"] == 16
    assert tiny.config["max_rate"] == dgmr.CONFIGS["paper"]["max_rate"]


def test_nan_and_huge_inputs_are_handled(tiny: dgmr.Generator) -> None:
    x = rain(1, 64, 64)
    x[0, 2, 0, :10, :10] = float("nan")
    x[0, 3, 0, 20, 20] = 1e9
    with torch.inference_mode():
        y = tiny(x, 2, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(y).all()


def test_same_seed_same_forecast_bit_for_bit(tiny: dgmr.Generator) -> None:
    x = rain(2, 64, 64)
    with torch.inference_mode():
        a = tiny(x, 4, generator=torch.Generator().manual_seed(7))
        b = tiny(x, 4, generator=torch.Generator().manual_seed(7))
        c = tiny(x, 4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_each_batch_member_gets_its_own_noise() -> None:
    torch.manual_seed(3)
    g = with_random_head(dgmr.build_generator(TINY).eval())
    x = rain(1, 64, 64).repeat(3, 1, 1, 1, 1)  # an ensemble: the same input 3 times
    with torch.inference_mode():
        y = g(x, 3, generator=torch.Generator().manual_seed(0))
        noise = g.sample_noise(x, torch.Generator().manual_seed(0))
    assert noise.shape == (3, g.noise_channels, 16, 16)
    assert not torch.equal(noise[0], noise[1])
    assert (y[0] - y[1]).abs().max() > 0
    assert (y[1] - y[2]).abs().max() > 0
    # the same noise for every member gives the same forecast: the difference is the latent
    with torch.inference_mode():
        same = g(x, 3, noise=noise[:1].repeat(3, 1, 1, 1))
    torch.testing.assert_close(same[0], same[2])


def test_lead_time_chunking_does_not_change_the_forecast(tiny: dgmr.Generator) -> None:
    x = rain(1, 64, 64)
    z = tiny.sample_noise(x, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        whole = tiny(x, 6, noise=z, time_chunk=6)
        stepwise = tiny(x, 6, noise=z, time_chunk=1)
        mixed = tiny(x, 6, noise=z, time_chunk=4)
    torch.testing.assert_close(stepwise, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed, whole, rtol=1e-5, atol=1e-5)


def test_more_steps_extend_the_same_forecast(tiny: dgmr.Generator) -> None:
    x = rain(1, 32, 32)
    z = tiny.sample_noise(x, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        short = tiny(x, 3, noise=z)
        long = tiny(x, 8, noise=z)
    torch.testing.assert_close(long[:, :3], short, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 3, 1, 64, 64), (1, 4, 1, 48, 64), (1, 4, 2, 64, 64)])
def test_bad_inputs_raise(tiny: dgmr.Generator, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="DGMR"):
        tiny(torch.zeros(shape), 2)


def test_unknown_config_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="paper"):
        dgmr.build_generator("huge")
    with pytest.raises(ValueError, match="unknown DGMR config keys"):
        dgmr.build_generator({"widht": 3})


def test_convgru_matches_the_gate_equations() -> None:
    torch.manual_seed(0)
    gru = ConvGRU(3, 5).eval()  # eval: no power iteration between the two computations
    x = torch.randn(2, 4, 3, 8, 8)
    h0 = torch.randn(2, 5, 8, 8)
    out, last = gru(x, h0)
    h = h0
    for t in range(4):
        xh = torch.cat([x[:, t], h], dim=1)
        r = torch.sigmoid(gru.read_gate(xh))
        u = torch.sigmoid(gru.update_gate(xh))
        c = F.relu(gru.output_conv(torch.cat([x[:, t], r * h], dim=1)))
        h = u * h + (1 - u) * c
        torch.testing.assert_close(out[:, t], h, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, h)
    # the same input at every step may be given once
    const, _ = gru(x[:, 0], h0, steps=4)
    rep, _ = gru(x[:, :1].repeat(1, 4, 1, 1, 1), h0)
    torch.testing.assert_close(const, rep, rtol=1e-5, atol=1e-5)


def test_blocks_shapes_and_space_to_depth_roundtrip() -> None:
    x = torch.randn(2, 3, 6, 16, 16)
    assert space_to_depth(x).shape == (2, 3, 24, 8, 8)
    torch.testing.assert_close(depth_to_space(space_to_depth(x)), x)
    # space-to-depth moves each 2x2 block into channels
    img = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert space_to_depth(img)[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert DBlock(4, 8)(torch.randn(2, 4, 16, 16)).shape == (2, 8, 8, 8)
    assert DBlock(4, 8, dims=3)(torch.randn(2, 4, 6, 16, 16)).shape == (2, 8, 3, 8, 8)
    assert DBlock(8, 8, downsample=False)(torch.randn(2, 8, 4, 4)).shape == (2, 8, 4, 4)
    assert GBlock(8, 4, upsample=True)(torch.randn(2, 8, 4, 4)).shape == (2, 4, 8, 8)
    assert LBlock(8, 24)(torch.randn(2, 8, 4, 4)).shape == (2, 24, 4, 4)
    att = SpatialAttention(16)
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(att(x), x)  # gamma starts at 0: identity
    with torch.no_grad():
        att.gamma.fill_(1.0)
    assert not torch.allclose(att(x), x)


def test_discriminator_scores() -> None:
    torch.manual_seed(0)
    d = dgmr.build_discriminator(TINY).eval()
    inputs = rain(3, 128, 128)
    lead = torch.rand(3, 18, 1, 128, 128)
    s = d(inputs, lead, generator=torch.Generator().manual_seed(0))
    assert s.shape == (3, 2)
    assert torch.isfinite(s).all()
    s2 = d(inputs, lead, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s, s2)


def test_paper_config_parameter_counts() -> None:
    g = dgmr.build_generator("paper")
    d = dgmr.build_discriminator("paper")
    n_g, n_d = dgmr.count_parameters(g), dgmr.count_parameters(d)
    print(f"DGMR paper config: generator {n_g:,} parameters, discriminators {n_d:,}")
    assert n_g == PAPER_GENERATOR_PARAMETERS + EXTRA_GRU_PARAMETERS + EXTRA_HEAD_PARAMETERS
    assert n_d == PAPER_DISCRIMINATOR_PARAMETERS
    # the published widths: ConvGRU states 48..384, sampler 768..48, D blocks 48..768
    assert [gru.hidden_channels for gru in g.sampler.grus] == [384, 192, 96, 48]
    assert g.sampler.out_conv.in_channels == 48
    assert d.spatial.fc.in_features == 768
    # within 2% of the public port once its unused shortcut convolutions are added
    n_published = n_g - EXTRA_GRU_PARAMETERS - EXTRA_HEAD_PARAMETERS
    assert abs(n_published + 786_240 - 53.6e6) / 53.6e6 < 0.002
    assert abs(n_d + 2 * 590_592 - 44.7e6) / 44.7e6 < 0.002


def test_small_config_is_a_few_megabytes() -> None:
    g = dgmr.build_generator("small")
    size = sum(t.numel() * t.element_size() for t in g.state_dict().values())
    assert 1e6 < size < 8e6


# ---------------------------------------------------------------- shipped weights


def expected_sha256() -> str | None:
    """The sha256 the registry records for the shipped DGMR weights (None if unregistered)."""
    try:
        from xnowcast.registry import get_spec

        spec = get_spec("dgmr")
    except Exception:
        return None
    for entry in spec.weights.values():
        if entry.filename == WEIGHTS.name:
            return entry.sha256
    return None


def load_shipped() -> tuple[dgmr.Generator, dict]:
    from xnowcast.weights import load_state_dict

    sha = expected_sha256() or hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    state, meta = load_state_dict(WEIGHTS, sha256=sha)
    assert meta["model"] == "dgmr"
    g = dgmr.build_generator(meta["config"])
    g.load_state_dict(state)
    return g.eval(), meta


def test_shipped_weights_metadata_and_hash() -> None:
    from xnowcast.errors import WeightsError
    from xnowcast.weights import load_state_dict

    _, meta = load_shipped()
    assert meta["training"]["held_out"] == "rmi-20210704"
    assert "rmi-20210704" not in meta["training"]["events"]
    assert meta["training"]["steps"] > 0
    for key in ("csi_mean_1", "csi_mean_4", "csi_mean_8", "crps"):
        assert np.isfinite(meta["scores"][key])
    with pytest.raises(WeightsError):
        load_state_dict(WEIGHTS, sha256="0" * 64)


def test_shipped_weights_forecast_the_sample_crop() -> None:
    import xnowcast.datasets as xd

    g, _ = load_shipped()
    ds = xd.open_dataset("sample")
    da = ds["precipitation"] if "precipitation" in ds else ds[next(iter(ds.data_vars))]
    assert "mm" in da.attrs["units"]
    arr = np.nan_to_num(da.isel(time=slice(0, 4)).values.astype(np.float32))
    h, w = (s // 32 * 32 for s in arr.shape[-2:])
    arr = arr[:, :h, :w]
    x = torch.from_numpy(arr)[None, :, None]
    with torch.inference_mode():
        y = g(x, 6, generator=torch.Generator().manual_seed(0))[0, :, 0].numpy()
    assert y.shape == (6, h, w)
    assert np.isfinite(y).all()
    assert y.min() >= 0 and y.max() < 300  # mm/h
    wet_in = arr[-1] > 1.0
    assert wet_in.mean() > 0.01
    first = y[0]
    # rain where the input rains, much less where it is dry far from any rain
    assert (first[wet_in] > 0.2).mean() > 0.5
    far_dry = F.max_pool2d(torch.from_numpy(arr[-1:] > 0.1).float(), 31, 1, 15)[0].numpy() == 0
    if far_dry.any():
        assert first[far_dry].mean() < 0.5 * first[wet_in].mean()
