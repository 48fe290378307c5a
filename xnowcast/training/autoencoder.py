"""Training of the frame autoencoder (:mod:`xnowcast.models.frame_autoencoder`).

Single frames of importance-sampled crops of the training events (the sampler
of the nowcasters, :class:`~xnowcast.training.data.SequenceCropSampler`, two
consecutive frames per crop, each used as a sample), dihedral augmentation,
Adam on :func:`~xnowcast.models.frame_autoencoder.autoencoder_loss`; validated
on the held-out event's rainiest crops (MAE in mm/h of the reconstruction, its
spectral distance, and the power of the 4-16 km wavelengths of the
reconstruction over the radar's); resumable checkpoints as
:mod:`xnowcast.training.nowcasters` (same files, bit-for-bit resume).

``--init-from FILE`` starts from the autoencoder of an autoencoder or cascast file;
with ``--decoder-only`` the encoder is frozen, so the latents stay those a cascast
denoiser was trained on, and when ``FILE`` is a cascast file the run also writes
``cascast.safetensors``: that cascast with the new decoder
(:func:`xnowcast.training.cascast.replace_decoder`).

Command line::

    nice -n 19 env OMP_NUM_THREADS=1 python -m xnowcast.training.autoencoder \\
        --data-root ../shared/data --out /work/nowcasters-run/autoencoder --cpu-budget 240
    # a longer-trained decoder for the shipped cascast
    python -m xnowcast.training.autoencoder --data-root ../shared/data --out RUN/decoder \\
        --init-from xnowcast/weights/cascast-small.safetensors --decoder-only --lr 3e-4 \\
        --cpu-budget 1800
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xnowcast.errors import ModelError
from xnowcast.models.frame_autoencoder import (
    FrameAutoencoder,
    autoencoder_loss,
    build_frame_autoencoder,
    log_amplitude_distance,
)
from xnowcast.training.data import CropBatch, SequenceCropSampler
from xnowcast.training.gan_step import dihedral
from xnowcast.training.nowcasters import _commit, _save_checkpoint, build_samplers, resume
from xnowcast.weights import read_metadata, save_weights

__all__ = ["band_power_ratio", "main", "train_autoencoder", "validate_autoencoder"]


def _frames(batch: CropBatch) -> torch.Tensor:
    """Every frame of a batch as one sample ``(N, 1, H, W)`` (missing pixels are 0)."""
    return torch.cat([batch.inputs, batch.targets], dim=1).flatten(0, 1)


def band_power_ratio(a: torch.Tensor, b: torch.Tensor, band: tuple[float, float]) -> float:
    """Power of ``a`` over that of ``b`` at wavelengths within ``band`` pixels."""
    ny, nx = a.shape[-2:]
    ky = torch.fft.fftfreq(ny)[:, None]
    kx = torch.fft.rfftfreq(nx)[None, :]
    wavelength = 1.0 / torch.sqrt(kx**2 + ky**2).clamp_min(1e-9)
    keep = (wavelength >= band[0]) & (wavelength <= band[1])
    pa = torch.fft.rfft2(a).abs().pow(2)[..., keep].sum()
    pb = torch.fft.rfft2(b).abs().pow(2)[..., keep].sum()
    return float(pa / pb.clamp_min(1e-12))


def _lineage_cpu_seconds(record: dict[str, Any]) -> float:
    """CPU seconds behind an autoencoder record: its own run's and those it started from."""
    if record.get("cpu_time_lineage_s") is not None:
        return float(record["cpu_time_lineage_s"])
    parent = record.get("initialised_from")
    earlier = _lineage_cpu_seconds(parent) if isinstance(parent, dict) else 0.0
    return float(record.get("cpu_time_s") or 0.0) + earlier


@torch.no_grad()
def validate_autoencoder(model: FrameAutoencoder, batch: CropBatch) -> dict[str, float]:
    """Reconstruction of the held-out frames: MAE (mm/h), spectral distance, 4-16 km power."""
    model.eval()
    rain = _frames(batch)
    recon_z, _, _ = model(rain)
    recon = model.from_z(recon_z)
    target = rain.clamp(0.0, model.max_rate)
    valid = torch.cat([batch.input_valid, batch.valid], dim=1).flatten(0, 1)
    model.train()
    return {
        "mae": round(float(((recon - target).abs() * valid).sum() / valid.sum()), 5),
        "spectral": round(float(log_amplitude_distance(recon_z, model.to_z(rain))), 5),
        "power_4_16km": round(band_power_ratio(recon, target, (4.0, 16.0)), 4),
    }


def train_autoencoder(
    sampler: SequenceCropSampler,
    val_batch: CropBatch | None,
    out_dir: str | Path,
    *,
    config: str | dict[str, Any] = "small",
    steps: int = 1000,
    cpu_budget: float | None = None,
    batch_size: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
    val_every: int = 50,
    checkpoint_every: int = 50,
    init_from: str | Path | None = None,
    decoder_only: bool = False,
    spectral_weight: float = 0.1,
) -> dict[str, Any]:
    """Train (or resume, when ``out_dir`` holds a checkpoint) the frame autoencoder.

    ``init_from``: start from the autoencoder of this autoencoder or cascast file (its
    config replaces ``config``); ``decoder_only``: train the decoder alone, the encoder
    frozen (needs ``init_from``); ``spectral_weight``: that of the loss's spectral
    term.  Returns ``steps``, ``cpu_time`` and ``history``; the last model is written to
    ``out_dir/autoencoder.safetensors`` with its recipe and held-out scores (and, for a
    cascast ``init_from`` with ``decoder_only``, that cascast with the new decoder to
    ``out_dir/cascast.safetensors``).
    """
    from xnowcast.training.cascast import load_autoencoder, replace_decoder

    if decoder_only and init_from is None:
        raise ModelError(
            "decoder_only trains the decoder of an existing autoencoder: give init_from "
            "(an autoencoder or cascast file)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    parent: dict[str, Any] = {}
    if init_from is not None:
        meta = read_metadata(init_from)
        stored = meta.get("config") or {}
        config = stored.get("autoencoder", stored) if meta.get("model") == "cascast" else stored
        initial, parent = load_autoencoder(init_from)
    model = build_frame_autoencoder(config)
    if init_from is not None:
        model.load_state_dict(initial)
    if decoder_only:
        model.encoder.requires_grad_(False)
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=lr)
    rng = torch.Generator().manual_seed(seed + 1)
    sampler.rng = np.random.default_rng(seed)
    state = resume(out, model, opt, rng, sampler)
    step, cpu, history = state["step"], state["cpu_time"], state["history"]
    start = time.process_time() - cpu

    def checkpoint() -> None:
        meta = {"step": step, "cpu_time": cpu, "history": history, "best": {}}
        meta["sampler_rng"] = dict(sampler.rng.bit_generator.state)
        _save_checkpoint(out, model, opt, rng, meta)

    def validation() -> None:
        if val_batch is not None and not any(h["step"] == step and "val" in h for h in history):
            history.append({"step": step, "val": validate_autoencoder(model, val_batch)})

    while step < steps and (cpu_budget is None or cpu < cpu_budget):
        if step % val_every == 0:
            validation()
        batch = dihedral(sampler.sample(batch_size), rng)
        loss, parts = autoencoder_loss(
            model, _frames(batch), generator=rng, spectral_weight=spectral_weight
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        cpu = time.process_time() - start
        history.append({"step": step, "loss": round(float(loss.detach()), 5), **parts})
        if step % checkpoint_every == 0:
            checkpoint()
    validation()
    checkpoint()
    curve = [{"step": h["step"], **h["val"]} for h in history if "val" in h]
    training = {
        "model": "frame_autoencoder",
        "loss": f"L1 of log1p(R)/log1p(max_rate) + {spectral_weight:g} log-amplitude spectral "
        "L1 + 1e-4 KL",
        "trained": "decoder (encoder frozen)" if decoder_only else "encoder and decoder",
        "steps": step,
        "cpu_time_s": round(cpu, 1),
        "batch_size": batch_size,
        "lr": lr,
        "crop": sampler.crop,
        "events": sorted(set(sampler.names)),
        "augment": "dihedral",
        "curve": curve,
        "commit": _commit(),
    }
    if parent:
        training["initialised_from"] = parent
        training["cpu_time_lineage_s"] = round(cpu + _lineage_cpu_seconds(parent), 1)
    scores = curve[-1] if curve else {}
    save_weights(
        model.state_dict(),
        out / "autoencoder.safetensors",
        {"model": "frame_autoencoder", "config": model.config, "training": training,
         "scores": scores},
    )  # fmt: skip
    if decoder_only and "taken_from" in parent:  # a cascast file: hand back its new version
        replace_decoder(init_from, out / "autoencoder.safetensors", out / "cascast.safetensors")
    return {"steps": step, "cpu_time": cpu, "history": history}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xnowcast.training.autoencoder``: train the frame autoencoder, RMI held out."""
    from xnowcast.io import open_radar
    from xnowcast.training.gan_cli import EVENTS

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--config", default="small")
    p.add_argument("--cpu-budget", type=float, default=240.0)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--init-from", help="an autoencoder or cascast file to start from")
    p.add_argument("--decoder-only", action="store_true", help="freeze the encoder")
    p.add_argument("--spectral-weight", type=float, default=0.1)
    a = p.parse_args(argv)
    root, holdout = Path(a.data_root), "rmi-20210704"
    train = {n: open_radar(root / EVENTS[n]) for n in EVENTS if n != holdout}
    val = {holdout: open_radar(root / EVENTS[holdout])}
    sampler, val_batch = build_samplers(
        train, val, input_frames=1, lead_frames=1, crop=a.crop, val_crop=128, val_crops=8
    )
    result = train_autoencoder(
        sampler, val_batch, a.out, config=a.config, steps=a.steps, cpu_budget=a.cpu_budget,
        lr=a.lr, init_from=a.init_from, decoder_only=a.decoder_only,
        spectral_weight=a.spectral_weight,
    )  # fmt: skip
    print(json.dumps({"steps": result["steps"], "val": result["history"][-1]}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
