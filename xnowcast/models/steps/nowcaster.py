"""STEPS: the Short-Term Ensemble Prediction System, batched over members in torch.

Bowler, Pierce and Seed (2006), Q. J. R. Meteorol. Soc. 132; Seed, Pierce and
Norman (2013), Water Resour. Res. 49; the defaults follow pysteps' STEPS
(Pulkkinen et al. 2019). For every initialisation:

1. motion: the project's optical flow (:class:`~xnowcast.models.extrapolation.Extrapolation`)
   on the last input frames;
2. rain rate to dB (``10 log10 R``; below ``rain_threshold`` the ``zero_value``),
   the earlier frames advected to the time of the last one (the project's
   semi-Lagrangian scheme), so that the cascade evolves in the Lagrangian frame;
3. a Gaussian FFT bandpass cascade (:mod:`.cascade`) of the three aligned frames,
   each level normalised; lag-1 and lag-2 correlations per level give an AR(2)
   model per level (:mod:`.autoregression`);
4. per step and member, all members at once: noise with the observed spectrum
   decomposed into the cascade (:mod:`.noise`), one AR(2) step of every level,
   recomposition with the statistics of the last observation, the incremental
   precipitation mask and probability matching (:mod:`.probability_matching`),
   then advection of the member's field along its own perturbed motion to the
   lead time, and back to rain rate.

The cascade levels are held in the Fourier domain, so a step costs one forward
(the noise) and one inverse (the recomposition) FFT per member.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xnowcast.errors import ModelError
from xnowcast.models.advection import (
    departure_points,
    semi_lagrangian,
    to_full_resolution,
    trajectory_grid,
)
from xnowcast.models.base import NowcastModel, merge_settings
from xnowcast.models.extrapolation import Extrapolation
from xnowcast.models.motion_perturbation import (
    BPS_PARALLEL,
    BPS_PERPENDICULAR,
    MOTION_DRAWS,
    MotionPerturbation,
)
from xnowcast.models.optical_flow import normalized_pixel_size
from xnowcast.models.persistence import config_settings
from xnowcast.models.steps.autoregression import adjust_lag2, ar2_parameters
from xnowcast.models.steps.cascade import BandpassCascade, spectral_inner
from xnowcast.models.steps.evolution import MemberCascades
from xnowcast.models.steps.noise import noise_drive, noise_filter
from xnowcast.models.steps.probability_matching import (
    apply_mask,
    cdf_match,
    incremental_mask,
    mean_match,
)
from xnowcast.registry import ModelSpec, register

__all__ = ["CONFIGS", "Steps", "build_steps", "from_db", "to_db"]

#: Named configurations; a dict given to :func:`build_steps` overrides "default".
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {
        "motion_frames": 3,
        "levels": 6,
        "gauss_scale": 0.5,
        "rain_threshold": 0.1,
        "zero_value": -15.0,
        "noise": "nonparametric",
        "noise_window_alpha": 0.2,
        "motion_perturbation": True,
        "motion_draws": "stratified",
        "perturbation_parallel": list(BPS_PARALLEL),
        "perturbation_perpendicular": list(BPS_PERPENDICULAR),
        "mask": "incremental",
        "mask_rim": 10,
        "mask_factor": 1.0,
        "probability_matching": "cdf",
        "grid_spacing_km": 1.0,
        "time_step_minutes": 5.0,
        "trajectory_scale": 4,
    },
}

_CHOICES = {
    "motion_draws": MOTION_DRAWS,
    "noise": ("nonparametric", "parametric", None),
    "mask": ("incremental", None),
    "probability_matching": ("cdf", "mean", None),
}


def to_db(rate: Tensor, threshold: float, zero_value: float) -> Tensor:
    """Rain rate to ``10 log10(rate)``; ``zero_value`` below ``threshold`` (NaN stays NaN)."""
    db = 10.0 * torch.log10(rate.clamp_min(threshold))
    return torch.where(rate < threshold, torch.full_like(db, zero_value), db)


def from_db(db: Tensor, threshold: float) -> Tensor:
    """Back to rain rate; values below ``threshold`` (the zero value) become 0, NaN stays."""
    rate = torch.pow(10.0, db / 10.0)
    return torch.where(rate < threshold, torch.zeros_like(rate), rate)


def _groups(frames: Tensor, valid: Tensor | None) -> list[tuple[int, int]]:
    """Runs of identical consecutive rows (the members of one initialisation)."""
    bounds, start = [], 0
    for row in range(1, frames.shape[0]):
        same = torch.equal(frames[row], frames[row - 1])
        if same and valid is not None:
            same = torch.equal(valid[row], valid[row - 1])
        if not same:
            bounds.append((start, row))
            start = row
    bounds.append((start, frames.shape[0]))
    return bounds


class Steps(NowcastModel):
    """STEPS ensemble nowcast (parameter-free: everything is estimated from the input).

    Parameters
    ----------
    **config
        Settings, the keys of ``CONFIGS["default"]``: ``motion_frames`` (frames for
        the optical flow), ``levels`` and ``gauss_scale`` (cascade),
        ``rain_threshold`` (mm/h) and ``zero_value`` (dB) of the dB transform,
        ``noise`` ("nonparametric", "parametric" or None) and
        ``noise_window_alpha``, ``motion_perturbation`` with the
        ``perturbation_parallel``/``perturbation_perpendicular`` coefficients
        (km/h) and ``motion_draws`` ("centred": independent draws less their
        mean; "stratified": Latin hypercube draws over the members;
        "independent": as pysteps), ``mask`` ("incremental" or None) with ``mask_rim`` and
        ``mask_factor``, ``probability_matching`` ("cdf", "mean" or None),
        ``grid_spacing_km`` and ``time_step_minutes`` (used when the caller does not
        pass them) and the advection's ``trajectory_scale``.

    Attributes
    ----------
    input_frames : int
        Frames used: three for the AR(2) (at least ``motion_frames``).
    spatial_multiple : int
        1: any grid size.
    accepts_mask : bool
        True: unobserved pixels count as no rain inside the model, and the output is
        NaN where a trajectory departs from an unobserved pixel of the last frame.
    accepts_geometry : bool
        True: ``forward`` takes ``grid_spacing_km`` and ``time_step_minutes``.
    batches_members : bool
        True: all members of an initialisation are best computed in one call (the
        rows of identical input share motion, cascade and AR estimation).
    """

    label = "steps"
    spatial_multiple = 1
    accepts_mask = True
    accepts_geometry = True
    batches_members = True

    def __init__(self, **config: Any) -> None:
        super().__init__()
        full = merge_settings("steps", copy.deepcopy(CONFIGS["default"]), config)
        for key, choices in _CHOICES.items():
            if full[key] not in choices:
                raise ModelError(f"steps setting {key} must be one of {choices}, got {full[key]!r}")
        if int(full["levels"]) < 3:
            raise ModelError(f"steps needs levels >= 3, got {full['levels']}")
        if int(full["motion_frames"]) < 2:
            raise ModelError("steps needs motion_frames >= 2 to estimate motion")
        for key in ("rain_threshold", "grid_spacing_km", "time_step_minutes", "gauss_scale"):
            if not float(full[key]) > 0:
                raise ModelError(f"steps setting {key} must be positive, got {full[key]}")
        self.config: dict[str, Any] = full
        self.flow_model = Extrapolation(
            input_frames=int(full["motion_frames"]), trajectory_scale=full["trajectory_scale"]
        )
        self.input_frames = max(3, int(full["motion_frames"]))

    def forward(
        self,
        frames: Tensor,
        steps: int,
        *,
        valid: Tensor | None = None,
        generator: torch.Generator | None = None,
        grid_spacing_km: float | None = None,
        time_step_minutes: float | None = None,
    ) -> Tensor:
        """Nowcast ``steps`` frames ahead; every row of ``frames`` is one member.

        Parameters
        ----------
        frames
            Rain rate ``(B, T, 1, H, W)`` in mm/h, ``T >= input_frames``; NaN counts
            as unobserved. Identical consecutive rows are members of one ensemble.
        steps
            Number of lead times.
        valid
            Boolean mask of observed pixels shaped like ``frames``, or None.
        generator
            Random generator on the device of ``frames`` (None: torch's global one).
        grid_spacing_km, time_step_minutes
            Pixel size and time step of the input; the config's values when None.

        Returns
        -------
        Tensor
            ``(B, steps, 1, H, W)`` float32 rain rate in mm/h; NaN where the backward
            trajectory leaves the domain or departs from an unobserved pixel.
        """
        frames, valid = self.check_inputs(frames, steps, valid)
        frames = frames.to(torch.float32)
        finite = torch.isfinite(frames)
        if not bool(finite.all()):
            valid = finite if valid is None else valid & finite
            frames = torch.where(finite, frames, 0.0)
        spacing = float(grid_spacing_km or self.config["grid_spacing_km"])
        minutes = float(time_step_minutes or self.config["time_step_minutes"])
        outputs = []
        for start, stop in _groups(frames, valid):
            outputs.append(
                self.ensemble(
                    frames[start],
                    None if valid is None else valid[start],
                    stop - start,
                    steps,
                    generator,
                    spacing,
                    minutes,
                )
            )
        return torch.cat(outputs).unsqueeze(2)

    def ensemble(
        self,
        frames: Tensor,
        valid: Tensor | None,
        members: int,
        steps: int,
        generator: torch.Generator | None,
        grid_spacing_km: float,
        time_step_minutes: float,
    ) -> Tensor:
        """``members`` forecasts from one input sequence ``(T, 1, H, W)`` -> ``(M, steps, H, W)``."""
        cfg = self.config
        threshold, zero = float(cfg["rain_threshold"]), float(cfg["zero_value"])
        threshold_db = 10.0 * math.log10(threshold)
        _, _, height, width = frames.shape
        flow = self.flow_model.motion(
            frames[None, -self.flow_model.input_frames :],
            None if valid is None else valid[None, -self.flow_model.input_frames :],
            full_resolution=False,
        )
        last_valid = None if valid is None else valid[-1:]
        db = to_db(frames[-3:, 0], threshold, zero)
        aligned = [db[-1]]
        for lag in (1, 2):
            mask = None if valid is None else valid[-1 - lag][None]
            moved = semi_lagrangian(
                db[-1 - lag][None, None],
                flow,
                lag,
                valid=mask,
                trajectory_scale=int(cfg["trajectory_scale"]),
            )[0, -1, 0]
            aligned.insert(0, torch.nan_to_num(moved, nan=zero))
        observed = torch.stack(aligned)  # t-2, t-1, t in the frame of t
        target = observed[-1]
        if not bool((target > threshold_db).any()):  # no rain: nothing to forecast
            zeros = torch.zeros_like(frames[-1:])
            dry = semi_lagrangian(zeros, flow, steps, valid=last_valid)[:, :, 0]
            return dry.expand(members, -1, -1, -1).clone()

        cascade = BandpassCascade(
            height, width, int(cfg["levels"]), cfg["gauss_scale"], frames.device
        )
        levels, mean, std = cascade.decompose(torch.fft.rfft2(observed))
        gamma1 = spectral_inner(levels[2], levels[1], height, width)
        gamma2 = adjust_lag2(gamma1, spectral_inner(levels[2], levels[0], height, width))
        phi = ar2_parameters(gamma1, gamma2)
        # The levels evolve with the statistics of the last observation restored
        # (the AR(2) is linear, so scaling commutes with it); complex spectra as real
        # views, levels along dim -4.
        scale = std[2]
        drive = None
        if cfg["noise"] is not None:
            amplitude = noise_filter(observed, cfg["noise"], cfg["noise_window_alpha"])
            drive = noise_drive(amplitude, cascade, scale * phi[:, 2])
        evolving = MemberCascades(
            cascade,
            levels[2] * scale[:, None, None],
            levels[1] * scale[:, None, None],
            phi,
            drive,
            members,
        )
        level_means = mean[2].sum()

        radius = int((cfg["mask_factor"] * time_step_minutes / grid_spacing_km - 1) / 2)
        rim = int(cfg["mask_rim"])
        rain_mask = None
        if cfg["mask"] == "incremental":
            rain_mask = incremental_mask((target >= threshold_db)[None], radius, rim)
        observed_mean = target[target >= threshold_db].mean()
        ranked_target = torch.sort(target.reshape(-1)).values

        perturb = None
        if cfg["motion_perturbation"]:
            perturb = MotionPerturbation(
                flow,
                members,
                generator,
                grid_spacing_km,
                time_step_minutes,
                tuple(cfg["perturbation_parallel"]),
                tuple(cfg["perturbation_perpendicular"]),
                sampling=cfg["motion_draws"],
            )
        pixel = normalized_pixel_size(height, width, flow.dtype, flow.device).view(1, 2, 1, 1)
        position = trajectory_grid(
            height, width, int(cfg["trajectory_scale"]), flow.dtype, flow.device
        )
        position = position.expand(members, -1, -1, -1)
        coverage = (
            torch.ones_like(frames[-1:]) if last_valid is None else last_valid.to(torch.float32)
        ).expand(members, -1, -1, -1)

        out = torch.empty(
            (members, steps, height, width), dtype=torch.float32, device=frames.device
        )
        for step in range(1, steps + 1):
            field = evolving.step(generator) + level_means
            if rain_mask is not None:
                field = apply_mask(field, rain_mask)
            if cfg["probability_matching"] == "cdf":
                field = cdf_match(field, ranked_target)
            elif cfg["probability_matching"] == "mean":
                field = mean_match(field, observed_mean, threshold_db)
            if cfg["mask"] == "incremental":
                rain_mask = incremental_mask(field >= threshold_db, radius, rim)

            velocity = flow.expand(members, -1, -1, -1)
            if perturb is not None:
                velocity = velocity + perturb(step)
            points, _ = departure_points(velocity * pixel, 1, position)
            position = points[:, 0].permute(0, 2, 3, 1)
            grid = to_full_resolution(points[:, 0], height, width)
            # normalised convolution: unobserved pixels and the outside take no part
            both = torch.cat((field[:, None] * coverage, coverage), dim=1)
            sampled = F.grid_sample(
                both, grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            weight = sampled[:, 1]
            moved = sampled[:, 0] / weight.clamp_min(1e-6)
            moved = torch.where(weight >= 0.5, moved, float("nan"))
            out[:, step - 1] = from_db(moved, threshold)
        return out


def build_steps(config: str | dict[str, Any] = "default") -> Steps:
    """Build the STEPS nowcaster from a named configuration or a dict of overrides.

    Parameters
    ----------
    config
        A name in :data:`CONFIGS`, or a dict of settings overriding ``"default"``.

    Returns
    -------
    Steps

    Raises
    ------
    ModelError
        For an unknown name or setting.
    """
    return Steps(**config_settings(config, CONFIGS, "steps"))


def _interface(config: str | dict[str, Any] | None) -> dict[str, int]:
    """Input frames of a config: three for the AR(2), at least ``motion_frames``."""
    settings = config_settings("default" if config is None else config, CONFIGS, "steps")
    frames = settings.get("motion_frames", CONFIGS["default"]["motion_frames"])
    return {"input_frames": max(3, int(frames))}


SPEC = register(
    ModelSpec(
        name="steps",
        task="nowcast",
        builder="xnowcast.models.steps.nowcaster:build_steps",
        summary=(
            "STEPS ensemble: optical flow + FFT cascade with an AR(2) per level, "
            "spectrally shaped noise, motion perturbations, incremental mask and "
            "probability matching, batched over members in torch."
        ),
        reference=(
            "Bowler, Pierce & Seed (2006), Q. J. R. Meteorol. Soc. 132; "
            "Seed, Pierce & Norman (2013), Water Resour. Res. 49"
        ),
        normalisation="dB of rain rate (threshold 0.1 mm/h, zero value -15 dB) inside the module",
        default_config="default",
        stochastic=True,
        input_frames=3,
        interface=_interface,
    )
)
