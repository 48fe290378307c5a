"""The frame autoencoder of the CasCast stage (issue 15): shapes, compression, its loss, and
that a short training on synthetic storms lowers the held-out reconstruction error and resumes
bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest

from xnowcast.errors import ModelError

torch = pytest.importorskip("torch")

from xnowcast.models.frame_autoencoder import (  # noqa: E402
    build_frame_autoencoder,
    log_amplitude_distance,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here runs torch on one thread."""


@pytest.mark.parametrize(("config", "factor"), [("tiny", 4), ({"factor": 8, "channels": 8}, 8)])
def test_latent_is_compressed_by_the_factor_and_decodes_to_rain(config, factor) -> None:
    ae = build_frame_autoencoder(config).eval()
    rain = torch.rand(2, 1, 32, 48) * 20
    with torch.no_grad():
        mean, logvar = ae.encode(rain)
        back = ae.decode(mean)
    assert mean.shape == logvar.shape == (2, 4, 32 // factor, 48 // factor)
    assert back.shape == rain.shape
    assert float(back.min()) >= 0.0 and float(back.max()) <= ae.max_rate


def test_bad_shapes_and_settings_are_named() -> None:
    ae = build_frame_autoencoder("tiny")
    with pytest.raises(ModelError, match="multiples of 4"):
        ae.encode(torch.zeros(1, 1, 30, 32))
    with pytest.raises(ModelError, match="factor must be 4 or 8"):
        build_frame_autoencoder({"factor": 2})


def test_spectral_term_sees_lost_small_scales() -> None:
    torch.manual_seed(0)
    field = torch.rand(1, 1, 32, 32)
    blurred = torch.nn.functional.avg_pool2d(field, 3, 1, 1, count_include_pad=False)
    assert float(log_amplitude_distance(field, field)) == 0.0
    assert float(log_amplitude_distance(blurred, field)) > 0.5


def test_short_training_improves_and_resumes_bit_for_bit(tmp_path: Path) -> None:
    from xnowcast.testing import moving_storm
    from xnowcast.training.autoencoder import train_autoencoder
    from xnowcast.training.nowcasters import build_samplers

    train = {"storm": moving_storm(frames=10, shape=(48, 48), cells=6, seed=1)}
    val = {"held-out": moving_storm(frames=6, shape=(48, 48), cells=6, seed=2)}
    sampler, val_batch = build_samplers(train, val, input_frames=1, lead_frames=1, crop=32,
                                        val_crop=32, val_crops=2)  # fmt: skip
    args = {"config": "tiny", "val_every": 2, "checkpoint_every": 2, "lr": 3e-3}
    straight = train_autoencoder(sampler, val_batch, tmp_path / "a", steps=4, **args)
    train_autoencoder(sampler, val_batch, tmp_path / "b", steps=2, **args)
    resumed = train_autoencoder(sampler, val_batch, tmp_path / "b", steps=4, **args)
    assert resumed["history"] == straight["history"]
    longer = train_autoencoder(sampler, val_batch, tmp_path / "c", steps=60, **args)
    maes = [h["val"]["mae"] for h in longer["history"] if "val" in h]
    assert maes[-1] < 0.5 * maes[0]
