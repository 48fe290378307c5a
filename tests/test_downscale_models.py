"""Downscaling models: the contract the runtime relies on, and the trilinear scheme's values."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xnowcast import registry
from xnowcast.errors import ModelError
from xnowcast.models.interpolation import RainTransform, Trilinear, interpolate_time
from xnowcast.registry import get_spec

DOWNSCALE_MODELS = registry.list_models("downscale")
build_model = functools.partial(registry.build_model, task="downscale")

LEARNED = ("unet", "unet3d", "zsm", "fczsm")
#: The smallest preset of each model (ZSM / FC-ZSM presets are named after the flow prior).
TINY = {
    "trilinear": "default",
    "flow": "default",
    "unet": "tiny",
    "unet3d": "tiny",
    "zsm": "flow-tiny",
    "fczsm": "flow-tiny",
    "srgan": "tiny",
}


def _rain(b: int, t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    field = torch.rand(b, t, 1, h, w, generator=gen) * 20
    return torch.where(field > 8, field, torch.zeros_like(field))


def _static(model, b: int, h: int, w: int) -> torch.Tensor | None:
    if not model.static_channels:
        return None
    f = model.factor
    return torch.rand(b, model.static_channels, h * f, w * f)


@pytest.mark.parametrize("name", DOWNSCALE_MODELS)
@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("time_factor", [1, 2])
def test_output_shapes_and_contract(name, factor, time_factor):
    config = TINY[name]
    torch.manual_seed(0)
    model = build_model(name, config, factor=factor, time_factor=time_factor)
    for attr in ("in_channels", "static_channels", "window", "spatial_multiple"):
        assert isinstance(getattr(model, attr), int)
    assert (model.factor, model.time_factor) == (factor, time_factor)
    assert model.config["factor"] == factor and model.config["time_factor"] == time_factor
    assert model.config["model"] == name
    h = w = 4 * model.spatial_multiple
    t = model.window
    frames = _rain(2, t, h, w)
    with torch.no_grad():
        out = model(frames, _static(model, 2, h, w))
    assert out.shape == (2, (t - 1) * time_factor + 1, 1, h * factor, w * factor)
    assert torch.isfinite(out).all() and (out >= 0).all()


@pytest.mark.parametrize("name", LEARNED)
def test_untrained_learned_models_start_as_their_baseline(name):
    """Zero-initialised output layers: before training the U-Nets are trilinear, ZSM is flow."""
    torch.manual_seed(0)
    model = build_model(name, TINY[name])
    base = build_model("flow" if "zsm" in name else "trilinear")
    frames = _rain(1, 4, 8, 8, seed=3)
    with torch.no_grad():
        out = model(frames, _static(model, 1, 8, 8))
    torch.testing.assert_close(out, base(frames), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", LEARNED)
def test_config_round_trip_rebuilds_the_same_model(name):
    torch.manual_seed(0)
    model = build_model(name, TINY[name], factor=2, time_factor=2)
    again = build_model(name, model.config, factor=2, time_factor=2)
    again.load_state_dict(model.state_dict(), strict=True)
    assert again.config == model.config
    frames = _rain(1, 4, 8, 8)
    static = _static(model, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(again(frames, static), model(frames, static))


@pytest.mark.parametrize("name", ["zsm", "unet3d"])
def test_models_take_other_window_lengths(name):
    model = build_model(name, TINY[name])
    with torch.no_grad():
        out = model(_rain(1, 3, 8, 8))
    assert out.shape == (1, 5, 1, 16, 16)


def test_unet2d_needs_its_window():
    model = build_model("unet", "tiny")
    with pytest.raises(ModelError, match="exactly 4 input frames"):
        model(_rain(1, 3, 8, 8))


@pytest.mark.parametrize("name", DOWNSCALE_MODELS)
def test_unsupported_factor_names_supported_ones(name):
    if name in ("trilinear", "flow"):
        with pytest.raises(ModelError, match=r"factor=0.*supported: any integer >= 1"):
            build_model(name, factor=0)
        return
    spec = get_spec(name, task="downscale")
    factors = re.escape(str(list(spec.factors)))
    time_factors = re.escape(str(list(spec.time_factors)))
    with pytest.raises(ModelError, match=rf"supports factor in {factors}, not 5"):
        build_model(name, factor=5)
    with pytest.raises(ModelError, match=rf"time_factor in {time_factors}, not 7"):
        build_model(name, time_factor=7)


def test_unknown_names_and_keys():
    with pytest.raises(ModelError, match="Unknown downscale model 'esrgan'"):
        build_model("esrgan")
    with pytest.raises(ModelError, match=r"no config 'huge'.*flow-compact"):
        build_model("zsm", "huge")
    with pytest.raises(ModelError, match=r"unknown config keys.*'nff'"):
        build_model("zsm", {"nff": 3})


def test_wrong_inputs_are_model_errors():
    fc = build_model("fczsm", "flow-tiny")
    with pytest.raises(ModelError, match="needs 3 static channels"):
        fc(_rain(1, 4, 8, 8))
    with pytest.raises(ModelError, match="static must be"):
        fc(_rain(1, 4, 8, 8), torch.zeros(1, 3, 8, 8))
    zsm = build_model("zsm", "flow-tiny")
    with pytest.raises(ModelError, match="multiples of 2"):
        zsm(_rain(1, 4, 7, 8))
    with pytest.raises(ModelError, match="expects 1 input channels"):
        zsm(torch.zeros(1, 4, 2, 8, 8))
    with pytest.raises(ModelError, match="at least 2 frames"):
        zsm(_rain(1, 1, 8, 8))


def test_dynamic_channels_are_stacked_with_the_input():
    torch.manual_seed(0)
    model = build_model(
        "fczsm", {"preset": "flow-tiny", "in_channels": 3, "dynamic_mean": [280.0, 0.0]}
    )
    assert model.in_channels == 3
    frames = torch.cat([_rain(1, 4, 8, 8), 280 + torch.randn(1, 4, 2, 8, 8)], 2)
    # Make the network non-trivial, then check the dynamic channels change the output.
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    static = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        a = model(frames, static)
        frames2 = frames.clone()
        frames2[:, :, 1:] += 5
        b = model(frames2, static)
    assert a.shape == (1, 7, 1, 16, 16)
    assert not torch.allclose(a, b)


def test_static_fields_drive_fczsm_offsets():
    torch.manual_seed(0)
    model = build_model("fczsm", "flow-tiny")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    frames = _rain(1, 4, 8, 8)
    with torch.no_grad():
        a = model(frames, torch.zeros(1, 3, 16, 16))
        b = model(frames, torch.ones(1, 3, 16, 16))
    assert not torch.allclose(a, b)


def test_paper_presets_have_the_paper_sizes():
    zsm = build_model("zsm", "flow-paper")
    cfg = zsm.config
    assert (cfg["nf"], cfg["k1"], cfg["k2"], cfg["groups"]) == (64, 5, 10, 8)
    assert cfg["transform"] == "dbz"
    assert len(zsm.extractor.body) == 5 and len(zsm.reconstruction.body) == 10
    n = sum(p.numel() for p in zsm.parameters())
    assert 4e6 < n < 6e6
    fc = build_model("fczsm", "flow-paper")
    assert fc.static_channels == 3 and sum(p.numel() for p in fc.parameters()) > n


# --- trilinear: the interpolation scheme ------------------------------------------------


def _linear_field(t: int, h: int, w: int) -> torch.Tensor:
    """a + b*x + c*y + d*t on cell centres, positive everywhere (coarse grid: cell = 1)."""
    tt = torch.arange(t, dtype=torch.float64).view(t, 1, 1)
    yy = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    xx = torch.arange(w, dtype=torch.float64).view(1, 1, w)
    return (50 + 0.7 * xx - 1.3 * yy + 2.0 * tt).unsqueeze(0).unsqueeze(2)


@pytest.mark.parametrize(("factor", "time_factor"), [(2, 2), (4, 2), (3, 3), (2, 1)])
def test_trilinear_is_exact_on_linear_fields(factor, time_factor):
    t, h, w = 4, 5, 6
    coarse = _linear_field(t, h, w)
    out = Trilinear(factor, time_factor)(coarse)[0, :, 0]
    # Fine cell centres in coarse-cell units: (j + 0.5)/f - 0.5; times k / tf.
    tt = torch.arange((t - 1) * time_factor + 1, dtype=torch.float64) / time_factor
    yy = (torch.arange(h * factor, dtype=torch.float64) + 0.5) / factor - 0.5
    xx = (torch.arange(w * factor, dtype=torch.float64) + 0.5) / factor - 0.5
    expected = 50 + 0.7 * xx.view(1, 1, -1) - 1.3 * yy.view(1, -1, 1) + 2.0 * tt.view(-1, 1, 1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def test_trilinear_keeps_input_frames_and_averages_between():
    frames = _rain(1, 3, 6, 6, seed=1).double()
    out = Trilinear(1, 2)(frames)
    torch.testing.assert_close(out[:, ::2], frames)
    torch.testing.assert_close(out[:, 1::2], (frames[:, :-1] + frames[:, 1:]) / 2)
    torch.testing.assert_close(interpolate_time(frames, 2), out)


def test_trilinear_block_mean_is_the_input_smoothed_by_1_6_1():
    """For f = 2, coarsen(up(x)) = x filtered by [1/8, 3/4, 1/8] per axis (documented)."""
    gen = torch.Generator().manual_seed(5)
    coarse = 10 + torch.rand(1, 2, 1, 7, 9, generator=gen, dtype=torch.float64)
    out = Trilinear(2, 1)(coarse)[0, :, 0]
    back = F.avg_pool2d(out, 2)

    def smooth(x: torch.Tensor, dim: int) -> torch.Tensor:
        n = x.shape[dim]
        first = 2 * x.narrow(dim, 0, 1) - x.narrow(dim, 1, 1)
        last = 2 * x.narrow(dim, n - 1, 1) - x.narrow(dim, n - 2, 1)
        padded = torch.cat([first, x, last], dim)
        return padded.narrow(dim, 0, n) / 8 + 3 * x / 4 + padded.narrow(dim, 2, n) / 8

    expected = smooth(smooth(coarse[0, :, 0], -1), -2)
    torch.testing.assert_close(back, expected, rtol=0, atol=1e-10)
    # ... which is the input itself wherever the field is linear:
    linear = _linear_field(2, 7, 9)
    torch.testing.assert_close(F.avg_pool2d(Trilinear(2, 1)(linear)[0, :, 0], 2), linear[0, :, 0])


def test_trilinear_clips_negative_extrapolation_and_ignores_dynamic_channels():
    frames = torch.zeros(1, 2, 2, 2, 2)
    frames[0, :, 0] = torch.tensor([[0.0, 4.0], [0.0, 4.0]])
    frames[0, :, 1] = 1e6  # a dynamic field must not leak into the rain rate
    out = build_model("trilinear", {"in_channels": 2})(frames)
    assert out.min() == 0.0
    assert float(out[0, 0, 0, 0, 0]) == 0.0  # 0 - 1 clipped
    assert float(out[0, 0, 0, 0, 3]) == 5.0  # 4 + 1 extrapolated


@pytest.mark.parametrize("kind", ["log", "linear"])
def test_transforms_invert(kind):
    rate = torch.tensor([0.0, 0.05, 1.0, 12.5, 80.0], dtype=torch.float64)
    tr = RainTransform(kind)
    torch.testing.assert_close(tr.inverse(tr(rate)), rate)


def test_dbz_transform_is_the_paper_preprocessing():
    tr = RainTransform("dbz")
    # Marshall-Palmer: 1 mm/h = 23.01 dBZ; 15 dBZ = 0.3162 mm/h; below is floored to 0.
    rate = torch.tensor([0.0, 0.2, 1.0, 10.0, 100.0], dtype=torch.float64)
    z = tr(rate)
    dbz = 10 * np.log10(200 * np.array([1.0, 10.0, 100.0]) ** 1.6)
    np.testing.assert_allclose(z[2:].numpy(), (dbz - 15) / 55, rtol=1e-12)
    assert z[0] == 0 and z[1] == 0
    back = tr.inverse(z)
    assert back[0] == 0 and back[1] == 0
    torch.testing.assert_close(back[2:], rate[2:])
