"""CasCast training (issue 15): the loss falls on real radar crops, the scales are set from
the data (one per lead time), runs resume bit for bit (also mid-way through a reused batch),
the weight average is exported and recorded, and new runs start from exported weights or
from the autoencoder of a cascast file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import xnowcast
from xnowcast.errors import ModelError
from xnowcast.weights import save_weights

torch = pytest.importorskip("torch")

from xnowcast.models.cascast import build_cascast  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def samplers(shared_data: Path):
    from xnowcast.io import open_radar
    from xnowcast.training.nowcasters import build_samplers

    train = {"mch-20150515": open_radar(shared_data / "radar" / "mch" / "20150515")}
    return build_samplers(train, train, input_frames=4, lead_frames=3, crop=32, val_crop=32,
                          val_crops=2)  # fmt: skip


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xnowcast.models.frame_autoencoder import build_frame_autoencoder

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("ae") / "ae.safetensors"
    save_weights(build_frame_autoencoder("tiny").state_dict(), path, {"config": "tiny"})
    return path


def test_training_lowers_the_loss_on_real_radar(samplers, autoencoder: Path) -> None:
    """Forty steps on one batch of real crops: the loss at fixed noise falls below 0.9x
    (predicting v = 0 scores about 1: the residual has unit scale)."""
    from xnowcast.training.cascast import validation_loss
    from xnowcast.weights import load_state_dict

    _, batch = samplers
    torch.manual_seed(0)
    model = build_cascast("tiny")
    model.autoencoder.load_state_dict(load_state_dict(autoencoder)[0])
    model.set_scales(batch.inputs, batch.targets, batch.valid)
    before = validation_loss(model, batch)
    opt = torch.optim.Adam(model.denoiser.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        loss = model.training_loss(batch.inputs, batch.targets, batch.valid, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert validation_loss(model, batch) < 0.9 * before
    assert all(p.grad is None for p in model.autoencoder.parameters())


def test_per_lead_scales_give_a_unit_residual_at_every_lead(samplers, autoencoder: Path) -> None:
    """``set_scales`` (per lead): the scaled residual has rms 1 at each lead time of the
    batch it was set on, and the 5-minute scale is below the last lead's (the
    extrapolation error grows with lead time); ``per_lead=False``: one scale."""
    from xnowcast.weights import load_state_dict

    _, batch = samplers
    model = build_cascast("tiny")
    model.autoencoder.load_state_dict(load_state_dict(autoencoder)[0])
    scales = model.set_scales(batch.inputs, batch.targets, batch.valid)
    _, residual, weight = model.targets(batch.inputs, batch.targets, batch.valid)
    w = weight.expand_as(residual)
    rms = ((residual**2 * w).sum((0, 2, 3, 4)) / w.sum((0, 2, 3, 4))).sqrt()
    torch.testing.assert_close(rms, torch.ones(3), rtol=1e-4, atol=1e-4)
    assert scales["residual_scale"][0] < scales["residual_scale"][-1]
    single = model.set_scales(batch.inputs, batch.targets, batch.valid, per_lead=False)
    assert isinstance(single["residual_scale"], float)
    assert torch.all(model.residual_scale == single["residual_scale"])


def test_a_file_with_one_residual_scale_loads_as_that_scale_at_every_lead() -> None:
    """Weights written before the per-lead scales (one number) load unchanged: the same
    scale at every lead, so the shipped file samples as it did."""
    model = build_cascast("tiny")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["residual_scale"] = torch.tensor(1.7)
    model.load_state_dict(state)
    assert model.residual_scale.shape == (3,) and torch.all(model.residual_scale == 1.7)


def test_training_resumes_bit_for_bit(samplers, autoencoder: Path, tmp_path: Path) -> None:
    from xnowcast.training.cascast import WEIGHTS, train_cascast
    from xnowcast.weights import load_state_dict

    sampler, batch = samplers

    def run(steps: int, out: str) -> dict:
        return train_cascast(
            sampler, batch, tmp_path / out, autoencoder, config="tiny", steps=steps,
            val_every=2, checkpoint_every=2, final_samples=out == "straight", progress=False,
        )  # fmt: skip

    straight = run(4, "straight")
    run(2, "resumed")
    resumed = run(4, "resumed")
    assert resumed["history"] == straight["history"] and resumed["steps"] == 4
    a, meta = load_state_dict(tmp_path / "straight" / WEIGHTS)
    b, _ = load_state_dict(tmp_path / "resumed" / WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    training = meta["training"]
    assert training["held_out"] == "rmi-20210704" and training["steps"] == 4
    assert len(training["curve"]) == 3 and len(training["scales"]["residual_scale"]) == 3
    assert min(training["scales"]["residual_scale"]) > 0
    assert meta["scores"]["mae_backbone"] >= 0 and meta["config"]["lead_frames"] == 3
    assert len(training["autoencoder"]["sha256"]) == 64
    fc = batch.inputs[:1]
    model = xnowcast.registry.load_model("cascast", weights=tmp_path / "straight" / WEIGHTS)
    assert model(fc, 3, generator=torch.Generator().manual_seed(0)).shape == (1, 3, 1, 32, 32)


def test_reused_batches_resume_bit_for_bit_mid_batch(
    samplers, autoencoder: Path, tmp_path: Path
) -> None:
    """``reuse=3``: one batch's frozen-stage output serves three steps; a run stopped in
    the middle of a batch (step 4 of 3 + 3) resumes to the same weights, and the
    batches really are reused (fewer crops drawn than without)."""
    from xnowcast.training.cascast import WEIGHTS, train_cascast
    from xnowcast.weights import load_state_dict

    sampler, batch = samplers
    drawn = []
    original = sampler.sample

    def counting(size: int):
        drawn.append(size)
        return original(size)

    sampler.sample = counting
    try:

        def run(steps: int, out: str, reuse: int = 3) -> dict:
            return train_cascast(
                sampler, batch, tmp_path / out, autoencoder, config="tiny", steps=steps,
                val_every=2, checkpoint_every=5, reuse=reuse, final_samples=False,
                progress=False,
            )  # fmt: skip

        straight = run(6, "straight")
        fresh_draws = len(drawn)
        run(4, "resumed")
        resumed = run(6, "resumed")
        drawn.clear()
        run(6, "every step", reuse=1)
    finally:
        sampler.sample = original
    assert resumed["history"] == straight["history"]
    a, meta = load_state_dict(tmp_path / "straight" / WEIGHTS)
    b, _ = load_state_dict(tmp_path / "resumed" / WEIGHTS)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert meta["training"]["reuse"] == 3
    # 2 training batches (+1 for the scales) against 6 (+1)
    assert fresh_draws == 3 and len(drawn) == 7
    with pytest.raises(ValueError, match="reuse"):
        run(1, "bad", reuse=0)


def test_weight_average_is_exported_resumes_and_is_recorded(
    samplers, autoencoder: Path, tmp_path: Path
) -> None:
    """``ema_decay`` turned on at a resume: the average starts there, survives a second
    resume bit for bit, is what the file holds, and the recipe change says when."""
    from xnowcast.training.cascast import WEIGHTS, train_cascast
    from xnowcast.training.nowcasters import CHECKPOINT, _load_checkpoint
    from xnowcast.weights import load_state_dict

    sampler, batch = samplers

    def run(steps: int, out: str, ema: float) -> dict:
        return train_cascast(
            sampler, batch, tmp_path / out, autoencoder, config="tiny", steps=steps, lr=3e-3,
            val_every=2, checkpoint_every=2, ema_decay=ema, final_samples=False, progress=False,
        )  # fmt: skip

    run(2, "straight", 0.0)
    straight = run(6, "straight", 0.9)
    run(2, "resumed", 0.0)
    run(4, "resumed", 0.9)
    resumed = run(6, "resumed", 0.9)
    assert resumed["history"] == straight["history"]
    weights, meta = load_state_dict(tmp_path / "resumed" / WEIGHTS)
    tensors, record = _load_checkpoint(tmp_path / "resumed" / CHECKPOINT)
    for key, value in weights.items():
        if key.startswith("denoiser."):
            name = key[len("denoiser.") :]
            assert torch.equal(value, tensors[f"average.{name}"])
    moved = [k for k in weights if k.startswith("denoiser.") and weights[k].is_floating_point()]
    assert any(not torch.equal(weights[k], tensors[f"model.{k}"]) for k in moved)
    training = meta["training"]
    assert record["average_since"] == 2 and "since step 2" in training["weights"]
    change = training["recipe_changes"]
    assert len(change) == 1 and change[0]["step"] == 2
    assert change[0]["before"]["ema_decay"] == 0.0 and change[0]["after"]["ema_decay"] == 0.9
    assert all("val_last" in h for h in straight["history"] if "val" in h and h["step"] > 2)


def test_a_new_run_continues_from_exported_weights(
    samplers, autoencoder: Path, tmp_path: Path
) -> None:
    """``init_from``: no old run folder needed; the lineage's steps and CPU time add up."""
    from xnowcast.training.cascast import WEIGHTS, train_cascast
    from xnowcast.weights import load_state_dict

    sampler, batch = samplers
    kwargs = dict(config="tiny", val_every=2, final_samples=False, progress=False)
    first = train_cascast(sampler, batch, tmp_path / "a", autoencoder, steps=2, **kwargs)
    parent, parent_meta = load_state_dict(tmp_path / "a" / WEIGHTS)
    second = train_cascast(
        sampler, batch, tmp_path / "b", None, steps=0, init_from=tmp_path / "a" / WEIGHTS, **kwargs
    )
    child, meta = load_state_dict(tmp_path / "b" / WEIGHTS)
    assert all(torch.equal(parent[k], child[k]) for k in parent)  # no step: the same weights
    assert second["history"][0]["val"] == first["history"][-1]["val"]
    train_cascast(sampler, batch, tmp_path / "c", None, steps=2, init_from=tmp_path / "a" / WEIGHTS,
                  **kwargs)  # fmt: skip
    grown, meta = load_state_dict(tmp_path / "c" / WEIGHTS)
    assert any(not torch.equal(parent[k], grown[k]) for k in parent if k.startswith("denoiser."))
    training, before = meta["training"], parent_meta["training"]
    assert training["initialised_from"]["steps"] == 2 and training["steps"] == 2
    assert training["autoencoder"] == before["autoencoder"]
    assert training["scales"] == before["scales"] and training["scales_from"] == "parent"
    # reset_scales: a parent with one residual scale continues with one per lead time
    train_cascast(sampler, batch, tmp_path / "g", autoencoder, steps=1, per_lead_scale=False,
                  **kwargs)  # fmt: skip
    single, _ = load_state_dict(tmp_path / "g" / WEIGHTS)
    assert torch.all(single["residual_scale"] == single["residual_scale"][0])
    train_cascast(sampler, batch, tmp_path / "r", None, steps=1, init_from=tmp_path / "g" / WEIGHTS,
                  reset_scales=True, **kwargs)  # fmt: skip
    reset, reset_meta = load_state_dict(tmp_path / "r" / WEIGHTS)
    assert reset_meta["training"]["scales_from"] == "reset"
    assert len(reset_meta["training"]["scales"]["residual_scale"]) == 3
    assert reset["residual_scale"][0] < reset["residual_scale"][-1]
    assert training["cpu_time_lineage_s"] == pytest.approx(
        before["cpu_time_lineage_s"] + training["cpu_time_s"], abs=0.2
    )
    with pytest.raises(ValueError, match="autoencoder file, or init_from"):
        train_cascast(sampler, batch, tmp_path / "d", None, steps=1, **kwargs)


def test_a_new_denoiser_starts_from_the_autoencoder_of_a_cascast_file(
    samplers, autoencoder: Path, tmp_path: Path
) -> None:
    """``autoencoder`` may be an exported cascast file (a denoiser of another size starts
    from the shipped autoencoder): its autoencoder tensors and record are taken, not its
    denoiser; ``time_budget`` stops on wall time, and the device is recorded."""
    from xnowcast.training.cascast import WEIGHTS, train_cascast
    from xnowcast.weights import load_state_dict

    sampler, batch = samplers
    kwargs = dict(config="tiny", val_every=2, final_samples=False, progress=False)
    train_cascast(sampler, batch, tmp_path / "a", autoencoder, steps=2, lr=3e-3, **kwargs)
    source = tmp_path / "a" / WEIGHTS
    new = train_cascast(sampler, batch, tmp_path / "b", source, steps=50, time_budget=0.0,
                        **kwargs)  # fmt: skip
    assert new["steps"] == 0
    parent, parent_meta = load_state_dict(source)
    child, meta = load_state_dict(tmp_path / "b" / WEIGHTS)
    ae_keys = [k for k in parent if k.startswith("autoencoder.")]
    assert ae_keys and all(torch.equal(parent[k], child[k]) for k in ae_keys)
    trained = [k for k in parent if k.startswith("denoiser.") and parent[k].is_floating_point()]
    assert any(not torch.equal(parent[k], child[k]) for k in trained)  # a fresh denoiser
    training = meta["training"]
    ae, before = training["autoencoder"], parent_meta["training"]["autoencoder"]
    assert ae["sha256"] == before["sha256"] and ae["taken_from"]["file"] == WEIGHTS
    assert training["device"] == "cpu" and training["wall_time_s"] >= 0
    assert "initialised_from" not in training


def test_a_cascast_gets_a_longer_trained_decoder_and_keeps_its_latents(
    samplers, autoencoder: Path, tmp_path: Path
) -> None:
    """``--init-from CASCAST --decoder-only``: the encoder (the latents the denoiser was
    trained on) and the denoiser stay bit for bit, the decoder learns (the held-out
    reconstruction error falls), and the new cascast file says what replaced what; an
    autoencoder with another encoder is refused with the command that makes a fitting one."""
    from xnowcast.models.frame_autoencoder import build_frame_autoencoder
    from xnowcast.testing import moving_storm
    from xnowcast.training.autoencoder import train_autoencoder
    from xnowcast.training.cascast import WEIGHTS, replace_decoder, train_cascast
    from xnowcast.training.nowcasters import build_samplers
    from xnowcast.weights import file_sha256, load_state_dict

    sampler, batch = samplers
    train_cascast(sampler, batch, tmp_path / "c", autoencoder, steps=2, config="tiny",
                  val_every=2, final_samples=False, progress=False)  # fmt: skip
    source = tmp_path / "c" / WEIGHTS
    storms = {"storm": moving_storm(frames=10, shape=(48, 48), cells=6, seed=1)}
    held = {"held-out": moving_storm(frames=6, shape=(48, 48), cells=6, seed=2)}
    ae_sampler, ae_val = build_samplers(storms, held, input_frames=1, lead_frames=1, crop=32,
                                        val_crop=32, val_crops=2)  # fmt: skip
    run = train_autoencoder(ae_sampler, ae_val, tmp_path / "d", steps=40, lr=3e-3,
                            val_every=40, init_from=source, decoder_only=True)  # fmt: skip
    maes = [h["val"]["mae"] for h in run["history"] if "val" in h]
    assert maes[-1] < 0.8 * maes[0], maes

    parent, parent_meta = load_state_dict(source)
    child, meta = load_state_dict(tmp_path / "d" / "cascast.safetensors")
    assert set(child) == set(parent)
    kept = [k for k in parent if not k.startswith("autoencoder.decoder.")]
    assert all(torch.equal(parent[k], child[k]) for k in kept)
    decoder = [k for k in parent if k.startswith("autoencoder.decoder.")]
    assert decoder and all(not torch.equal(parent[k], child[k]) for k in decoder if "weight" in k)
    training = meta["training"]
    assert training["autoencoder"]["trained"] == "decoder (encoder frozen)"
    assert training["autoencoder"]["sha256"] == file_sha256(
        tmp_path / "d" / "autoencoder.safetensors"
    )
    before = training["decoder_replaced"]["autoencoder_before"]
    assert before == parent_meta["training"]["autoencoder"]
    assert training["cpu_time_lineage_s"] > parent_meta["training"]["cpu_time_lineage_s"]
    assert meta["scores"] == {"before_decoder_replaced": parent_meta["scores"]}
    model = xnowcast.registry.load_model("cascast", weights=tmp_path / "d" / "cascast.safetensors")
    x = batch.inputs[:1]
    assert torch.isfinite(model(x, 3, generator=torch.Generator().manual_seed(0))).all()

    torch.manual_seed(9)
    other = tmp_path / "other.safetensors"
    save_weights(build_frame_autoencoder("tiny").state_dict(), other, {"config": "tiny"})
    with pytest.raises(ModelError, match="--decoder-only"):
        replace_decoder(source, other, tmp_path / "refused.safetensors")
    partial = dict(load_state_dict(tmp_path / "d" / "autoencoder.safetensors")[0])
    partial.pop(next(k for k in partial if k.startswith("decoder.")))
    save_weights(partial, tmp_path / "partial.safetensors", {"config": "tiny"})
    with pytest.raises(ModelError, match="--decoder-only"):  # not a KeyError
        replace_decoder(source, tmp_path / "partial.safetensors", tmp_path / "refused.safetensors")
    assert not (tmp_path / "refused.safetensors").exists()

    # a second decoder run on the first one's cascast: the CPU time of both is the lineage
    second = train_autoencoder(ae_sampler, ae_val, tmp_path / "e2", steps=2, lr=3e-3,
                               val_every=2, init_from=tmp_path / "d" / "cascast.safetensors",
                               decoder_only=True)  # fmt: skip
    _, second_meta = load_state_dict(tmp_path / "e2" / "autoencoder.safetensors")
    first_cpu = training["autoencoder"]["cpu_time_s"]
    assert second_meta["training"]["cpu_time_lineage_s"] == pytest.approx(
        round(second["cpu_time"], 1) + first_cpu, abs=0.2
    )
    assert (
        second_meta["training"]["initialised_from"]["initialised_from"]["sha256"]
        == (parent_meta["training"]["autoencoder"]["sha256"])
    )
    with pytest.raises(ModelError, match="give init_from"):
        train_autoencoder(ae_sampler, ae_val, tmp_path / "e", steps=1, decoder_only=True)


def test_a_decoder_run_counts_the_cpu_time_of_every_run_before_it() -> None:
    """The shipped file's chain: 450 steps (150 CPU-s), then two decoder runs (1,500 and 600):
    a run on top of it adds its own time to all three, not only to the last one's."""
    from xnowcast.training.autoencoder import _lineage_cpu_seconds

    first = {"steps": 450, "cpu_time_s": 150.0}
    second = {
        "trained": "decoder (encoder frozen)",
        "cpu_time_s": 1500.0,
        "initialised_from": first,
    }
    third = {"trained": "decoder (encoder frozen)", "cpu_time_s": 600.0, "initialised_from": second}
    assert _lineage_cpu_seconds(third) == 2250.0
    assert _lineage_cpu_seconds({**third, "cpu_time_lineage_s": 3000.0}) == 3000.0
    assert _lineage_cpu_seconds({}) == 0.0
