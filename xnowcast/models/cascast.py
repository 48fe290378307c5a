"""CasCast: a deterministic nowcast refined by latent diffusion (Gong et al. 2024).

CasCast ("Skillful High-resolution Precipitation Nowcasting via Cascaded
Modelling", ICML 2024) splits a nowcast into a deterministic stage, which gets the
mesoscale motion and the rain's position, and a probabilistic stage, which
generates the small-scale detail around it by diffusion in the latent space of a
frame autoencoder.  This module cascades, written from the paper (not its code):

1. **deterministic stage**: any registered deterministic nowcaster (config key
   ``backbone``, ``"extrapolation"`` by default: the project's best deterministic
   forecast of rain amounts, at no training cost; ``"convlstm"`` or ``"unet"`` with
   their shipped weights), run for ``lead_frames`` lead times (where it cannot know
   the answer, rain flowing in across the domain edge, it counts as no rain);
2. **latents**: every input frame, every deterministic frame and (in training)
   every observed frame is encoded by the frozen frame autoencoder
   (:mod:`xnowcast.models.frame_autoencoder`, latent mean, divided by
   ``latent_scale``);
3. **diffusion**: the CasFormer denoiser (:mod:`xnowcast.models.casformer`)
   generates the *residual* of the observed latents over the deterministic ones
   (divided by ``residual_scale``: one per lead time, the residual's rms at that
   lead in the training data, or one for all in older files), conditioned per
   lead time on the deterministic latent and on all input latents, by DDIM with classifier-free
   guidance (:mod:`xnowcast.models.diffusion`: cosine schedule, v-prediction);
   modelling the residual leaves the denoiser only what the deterministic stage
   misses (growth, decay, small scales, uncertainty);
4. **decoding**: deterministic latent + residual, decoded frame by frame to mm/h;
5. **amplitude from the deterministic stage** (``anchor_sigma`` > 0, pixels): each
   member is multiplied by the ratio of the deterministic forecast to the member,
   both smoothed by a Gaussian of ``anchor_sigma`` over the pixels the backbone
   knows (:func:`anchor_amplitude`; rain flowing in stays the member's), so that
   the deterministic stage sets how much rain falls at scales above
   ``anchor_sigma`` and the diffusion where and with what texture it falls within
   them, as the cascade divides the work.  Without it the shipped denoiser's rain
   volume drifts from its backbone's in directions that do not generalise (drier
   on the training events, wetter on held-out RMI).  With it (16 px, chosen on
   the four training events, RESULTS 15g) the members' volume, placement and
   small-scale power move toward the radar's, at a cost in CRPS on one event.

**Each member's motion** (``motion_perturbation`` > 0, extrapolation backbone): the
members do not share one deterministic stage.  Member ``m``'s backbone moves along
the motion perturbed as in STEPS (Bowler et al. 2006: along and across the local
motion, growing with lead time; :mod:`xnowcast.models.motion_perturbation`), scaled
by ``motion_perturbation`` and drawn from the member's own seed, and the diffusion
and the anchoring then work around that backbone.  The position error of the
motion, which dominates after 30 minutes, becomes spread between members instead
of a smooth residual the denoiser cannot resolve (the denoiser is trained on the
unperturbed backbone; the scale 0.5 was chosen on the four training events,
RESULTS 15j).

The model always generates ``lead_frames`` lead times (its training length) and
returns the first ``steps``, so a short forecast is the start of the long one.

**Members and seeds**: member ``m`` of an initialisation has a generator of its
own, seeded by the ``m``-th draw of the initialisation's generator (which the
runtime seeds from ``(seed, init time)``): a member does not depend on how many
members are computed with it or on ``batch_size``.  It draws the starting noise
of the whole (padded) domain, and the fresh noise of each DDIM step when
``eta > 0`` from seeds of its own; tiles cut their part of these fields
(:meth:`CasCast.crop_noise`), so the tiles of one member share one noise field.

Orientation: the runtime turns every input to north up before the model sees it,
so the same seed gives the flipped members for a flipped input.

Trained weights are required (the latent space is learned; ``weights=None`` is an
error): the shipped ``small`` weights (``cascast-small.safetensors``, the default)
were trained by :mod:`xnowcast.training.cascast` on four 5-minute radar events,
RMI 2021-07-04 held out; their metadata hold the recipe, the lineage's CPU time
and the validation curve, and ``docs/cascast_skill_card.rst`` scores them.  Their
config samples at ``temperature`` 1.1, chosen on the training events by the fair
CRPS (RESULTS 15p); a file whose config has no ``temperature`` samples at 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xnowcast.errors import ModelError
from xnowcast.models.anchoring import ANCHOR_BOUNDS, ANCHOR_FLOOR, anchor_amplitude
from xnowcast.models.base import NowcastModel, merge_settings
from xnowcast.models.casformer import CONFIGS as DENOISER_CONFIGS
from xnowcast.models.casformer import CasFormer, build_casformer
from xnowcast.models.diffusion import NoiseSchedule, ddim_sample, diffusion_loss
from xnowcast.models.frame_autoencoder import FrameAutoencoder, build_frame_autoencoder
from xnowcast.models.motion_perturbation import laplace_draws_from_seed
from xnowcast.models.persistence import config_settings
from xnowcast.registry import ModelSpec, WeightsFile, get_spec, register, resolve_weights
from xnowcast.weights import load_state_dict

__all__ = [
    "ANCHOR_BOUNDS",
    "ANCHOR_FLOOR",
    "CONFIGS",
    "CasCast",
    "LatentNoise",
    "anchor_amplitude",
    "build_cascast",
    "cascast_input_frames",
]

_BASE: dict[str, Any] = {
    "backbone": "extrapolation",
    "backbone_config": None,
    "input_frames": 4,
    "lead_frames": 18,
    "max_rate": 128.0,
    "schedule": "cosine",
    "timesteps": 1000,
    "sampling_steps": 20,
    "eta": 0.0,
    "guidance": 1.0,
    "temperature": 1.0,
    "drop_prob": 0.1,
    "anchor_sigma": 16.0,
    "motion_perturbation": 0.5,
    "grid_spacing_km": 1.0,
    "time_step_minutes": 5.0,
}

#: Settings that must not be negative.
_NON_NEGATIVE = (
    "sampling_steps",
    "eta",
    "guidance",
    "temperature",
    "drop_prob",
    "anchor_sigma",
    "motion_perturbation",
)

#: Named configurations; a dict given to :func:`build_cascast` overrides "small".
CONFIGS: dict[str, dict[str, Any]] = {
    "small": {**_BASE, "autoencoder": "small", "denoiser": "small"},
    "tiny": {**_BASE, "lead_frames": 3, "autoencoder": "tiny", "denoiser": "tiny"},
    "medium": {**_BASE, "autoencoder": "small", "denoiser": "medium"},
    "paper": {**_BASE, "autoencoder": "f8", "denoiser": "paper"},
}

#: Frames the autoencoder turns into latents at once (bounds the memory of large tiles).
_FRAME_CHUNK = 8


def cascast_input_frames(config: str | dict[str, Any] | None) -> int:
    """Input frames of a cascast config: those of its condition or of its backbone, the more."""
    full = {**CONFIGS["small"], **config_settings(config or "small", CONFIGS, "cascast")}
    backbone = get_spec(str(full["backbone"]), "nowcast")
    declared = backbone.declared(full["backbone_config"] or backbone.default_config)
    return max(int(full["input_frames"]), int(declared["input_frames"] or 1))


def cascast_interface(config: str | dict[str, Any] | None) -> dict[str, int]:
    """The interface of a cascast config (its spec's ``interface``)."""
    return {"input_frames": cascast_input_frames(config)}


@dataclass(frozen=True)
class LatentNoise:
    """The noise of a batch of members: starting noise and per-step seeds, for a window.

    ``initial`` ``(B, L, C, h, w)`` is the part of the whole domain's starting noise
    at latent offset ``origin``; ``seeds`` (one per member) generate the fresh noise of
    DDIM step ``k`` over the whole latent domain ``domain`` (then cut the same way).
    """

    initial: Tensor
    seeds: tuple[int, ...]
    domain: tuple[int, int]
    origin: tuple[int, int] = (0, 0)

    def step(self, k: int) -> Tensor:
        """The standard-normal noise of DDIM step ``k`` for this window."""
        _, n, c, h, w = self.initial.shape
        y0, x0 = self.origin
        out = []
        for seed in self.seeds:
            state = np.random.SeedSequence([seed, k + 1]).generate_state(2)
            g = torch.Generator(device=self.initial.device)
            g.manual_seed(int(state[0]) << 32 | int(state[1]))
            full = torch.randn(
                (n, c, *self.domain), generator=g, device=self.initial.device, dtype=torch.float32
            )
            out.append(full[..., y0 : y0 + h, x0 : x0 + w])
        return torch.stack(out).to(self.initial.dtype)

    def crop(self, ys: slice, xs: slice) -> LatentNoise:
        """The noise of the latent window ``[ys, xs]`` of this one."""
        y0, x0 = self.origin
        return LatentNoise(
            self.initial[..., ys, xs],
            self.seeds,
            self.domain,
            (y0 + (ys.start or 0), x0 + (xs.start or 0)),
        )


class CasCast(NowcastModel):
    """Deterministic nowcast + latent diffusion of its residual; see the module notes.

    ``model(frames[B, T, 1, H, W], steps, generator=None, noise=None)`` ->
    ``[B, steps, 1, H, W]`` in mm/h, one member per row.

    Parameters
    ----------
    **config
        The keys of ``CONFIGS["small"]``: ``backbone`` (a registered deterministic
        nowcaster) and ``backbone_config`` (None: its default; its shipped default
        weights are loaded), ``input_frames`` (input latents in the condition),
        ``lead_frames``, ``max_rate``, ``autoencoder`` and ``denoiser`` (config names
        or dicts), ``schedule``, ``timesteps``, ``sampling_steps``, ``eta``,
        ``guidance``, ``temperature`` (the starting noise's standard deviation: 1 samples
        the model as trained; above 1 members with more small-scale power and spread;
        0 the one deterministic sample; the shipped weights' config says 1.1),
        ``drop_prob`` (training), ``anchor_sigma`` (pixels; 0: the decoded member as it
        is), ``motion_perturbation`` (the members' motion
        perturbation, in units of the STEPS one; 0: every member on the same
        backbone; an extrapolation backbone only, other backbones have no motion to
        perturb and store 0) and ``grid_spacing_km``, ``time_step_minutes`` (used
        for the perturbation where the caller does not give them).
    """

    label = "cascast"
    accepts_geometry = True

    def __init__(self, **config: Any) -> None:
        super().__init__()
        full = merge_settings("cascast", CONFIGS["small"], config)
        self.config = full
        self.max_rate = float(full["max_rate"])
        self.lead_frames = int(full["lead_frames"])
        self.condition_frames = int(full["input_frames"])
        self.backbone = _build_backbone(str(full["backbone"]), full["backbone_config"])
        if not hasattr(self.backbone, "perturbed"):
            full["motion_perturbation"] = 0.0  # no motion to perturb
        self.input_frames = max(self.condition_frames, int(self.backbone.input_frames))
        self.autoencoder: FrameAutoencoder = build_frame_autoencoder(full["autoencoder"])
        overrides = {
            "latent_channels": self.autoencoder.config["latent_channels"],
            "input_frames": self.condition_frames,
            "lead_frames": self.lead_frames,
        }
        denoiser = config_settings(full["denoiser"], DENOISER_CONFIGS, "casformer")
        self.denoiser: CasFormer = build_casformer({**denoiser, **overrides})
        self.factor = self.autoencoder.factor
        self.spatial_multiple = self.factor * CasFormer.spatial_multiple
        # stored with the weights: the sub-configs resolved, so that the file describes itself
        self.config = {
            **full,
            "autoencoder": dict(self.autoencoder.config),
            "denoiser": dict(self.denoiser.config),
        }
        self.schedule = NoiseSchedule(int(full["timesteps"]), str(full["schedule"]))
        for key in (*_NON_NEGATIVE, "grid_spacing_km", "time_step_minutes"):
            if float(full[key]) < 0:
                raise ModelError(f"cascast: {key} must be >= 0, got {full[key]}")
        # set from the training data before training (stored with the weights)
        self.register_buffer("latent_scale", torch.ones(()))
        # one scale per lead time (older files hold one for all: see _load_from_state_dict)
        self.register_buffer("residual_scale", torch.ones(self.lead_frames))
        for module in (self.autoencoder, self.backbone):
            module.requires_grad_(False)
        # channels-last convolutions: sampling about 15 % faster on CPU (oneDNN), same values
        # to float rounding (benchmarks/RESULTS.md 20d)
        for module in (self.autoencoder, self.denoiser):
            module.to(memory_format=torch.channels_last)

    # -- the stages -------------------------------------------------------------------------

    def _clip(self, x: Tensor) -> Tensor:
        return torch.nan_to_num(x.float(), nan=0.0).clamp(0.0, self.max_rate)

    @torch.no_grad()
    def deterministic(self, x: Tensor) -> Tensor:
        """The backbone's nowcast ``(B, lead_frames, 1, H, W)`` in mm/h (0 where unknown)."""
        return self.deterministic_reach(x)[0]

    @torch.no_grad()
    def deterministic_reach(
        self,
        x: Tensor,
        draws: Tensor | None = None,
        grid_spacing_km: float | None = None,
        time_step_minutes: float | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The backbone's nowcast (as :meth:`deterministic`) and where it is known.

        The mask is False where the backbone gives no value (extrapolation: where the
        backward trajectory leaves the domain, rain flowing in that no input shows).
        ``draws`` ``(B, 2)``: each row's motion perturbation (Laplace draws times
        ``motion_perturbation``; None: the backbone as it is) on a grid of
        ``grid_spacing_km`` and ``time_step_minutes`` (None: the config's).
        """
        used = x[:, -int(self.backbone.input_frames) :]
        if draws is None:
            raw = self.backbone(used, self.lead_frames)
        else:
            spacing = float(grid_spacing_km or self.config["grid_spacing_km"])
            minutes = float(time_step_minutes or self.config["time_step_minutes"])
            raw = self.backbone.perturbed(
                used, self.lead_frames, draws, grid_spacing_km=spacing, time_step_minutes=minutes
            )
        return self._clip(raw), torch.isfinite(raw)

    @torch.no_grad()
    def encode(self, rain: Tensor) -> Tensor:
        """Latent means ``(B, T, C, h, w)`` of frames ``(B, T, 1, H, W)`` (divided by latent_scale)."""
        flat = rain.flatten(0, 1)
        parts = [
            self.autoencoder.encode(flat[i : i + _FRAME_CHUNK])[0]
            for i in range(0, flat.shape[0], _FRAME_CHUNK)
        ]
        return torch.cat(parts).unflatten(0, rain.shape[:2]) / self.latent_scale

    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        """Rain rate ``(B, T, 1, H, W)`` in mm/h of latents ``(B, T, C, h, w)``."""
        flat = latent.flatten(0, 1) * self.latent_scale
        parts = [
            self.autoencoder.decode(flat[i : i + _FRAME_CHUNK])
            for i in range(0, flat.shape[0], _FRAME_CHUNK)
        ]
        return torch.cat(parts).unflatten(0, latent.shape[:2])

    def condition(self, x: Tensor, det_rain: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(condition, deterministic latents)`` of clipped input frames ``x``.

        The condition ``(B, L, C * (1 + input_frames), h, w)`` holds per lead time the
        deterministic latent, then the input frames' latents.  ``det_rain``: the
        deterministic forecast when already computed.
        """
        det = self.encode(self.deterministic(x) if det_rain is None else det_rain)
        inputs = self.encode(x[:, -self.condition_frames :]).flatten(1, 2)
        inputs = inputs[:, None].expand(-1, det.shape[1], -1, -1, -1)
        return torch.cat([det, inputs], dim=2), det

    def _denoiser(self, condition: Tensor) -> Any:
        def model(x_t: Tensor, t: Tensor, drop: Tensor) -> Tensor:
            repeat = x_t.shape[0] // condition.shape[0]
            cond = condition if repeat == 1 else condition.repeat(repeat, 1, 1, 1, 1)
            return self.denoiser(x_t, t, cond, drop)

        return model

    # -- noise ------------------------------------------------------------------------------

    def sample_noise(self, frames: Tensor, generator: torch.Generator | None = None) -> LatentNoise:
        """The noise of every row of ``frames`` (one member each) over the whole domain."""
        h, w = frames.shape[-2] // self.factor, frames.shape[-1] // self.factor
        shape = (self.lead_frames, int(self.autoencoder.config["latent_channels"]), h, w)
        seeds, fields = [], []
        for _ in range(frames.shape[0]):
            # one draw per member from the initialisation's generator: a batch split
            # does not change which member gets which seed
            where = generator.device if generator is not None else "cpu"
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=where))
            member = torch.Generator(device=frames.device).manual_seed(seed)
            fields.append(torch.randn(shape, generator=member, device=frames.device))
            seeds.append(seed)
        dtype = frames.dtype if frames.is_floating_point() else torch.float32
        initial = torch.stack(fields).to(dtype)
        return LatentNoise(initial, tuple(seeds), (h, w))

    def crop_noise(self, noise: LatentNoise, ys: slice, xs: slice) -> LatentNoise:
        """The noise of the tile ``[ys, xs]`` (pixels; starts on multiples of spatial_multiple)."""
        m, f = self.spatial_multiple, self.factor
        starts = (ys.start or 0, xs.start or 0)
        if starts[0] % m or starts[1] % m:
            raise ModelError(
                f"cascast tiles must start on multiples of {m} pixels, got {starts}: "
                f"set tile_overlap to a multiple of {m} (xnowcast.set_options)"
            )
        return noise.crop(slice(starts[0] // f, ys.stop // f), slice(starts[1] // f, xs.stop // f))

    # -- forecast and training loss ---------------------------------------------------------

    def forward(
        self,
        frames: Tensor,
        steps: int,
        *,
        generator: torch.Generator | None = None,
        noise: LatentNoise | None = None,
        grid_spacing_km: float | None = None,
        time_step_minutes: float | None = None,
    ) -> Tensor:
        """Nowcast ``steps <= lead_frames`` frames, one member per row of ``frames``.

        ``noise`` (from :meth:`sample_noise` / :meth:`crop_noise`) overrides the draw
        from ``generator``; its seeds also draw each member's motion perturbation.
        ``grid_spacing_km``, ``time_step_minutes``: the grid's (None: the config's).
        """
        frames, _ = self.check_inputs(frames, steps)
        if steps > self.lead_frames:
            raise ModelError(
                f"cascast generates at most {self.lead_frames} lead times (the length it was "
                f"trained on), got steps={steps}"
            )
        dtype = frames.dtype
        x = self._clip(frames)
        if noise is None:
            noise = self.sample_noise(x, generator)
        gain = float(self.config["motion_perturbation"])
        draws = None
        if gain > 0:
            draws = gain * laplace_draws_from_seed(noise.seeds, x.device)
        det_rain, reach = self.deterministic_reach(x, draws, grid_spacing_km, time_step_minutes)
        condition, det = self.condition(x, det_rain)
        if tuple(noise.initial.shape) != tuple(det.shape):
            raise ModelError(
                f"cascast: noise must have shape {tuple(det.shape)}, got "
                f"{tuple(noise.initial.shape)}"
            )
        cfg = self.config
        residual = ddim_sample(
            self._denoiser(condition),
            self.schedule,
            noise.initial.to(det.dtype) * float(cfg["temperature"]),
            sampling_steps=int(cfg["sampling_steps"]),
            eta=float(cfg["eta"]),
            guidance=float(cfg["guidance"]),
            step_noise=noise.step,
        )
        latent = det + residual * self._lead_scale() / self.latent_scale
        rain = self.decode(latent[:, :steps]).clamp(0.0, self.max_rate)
        sigma = float(cfg["anchor_sigma"])
        rain = anchor_amplitude(rain, det_rain[:, :steps], sigma, reach[:, :steps])
        return rain.clamp(0.0, self.max_rate).to(dtype)

    @torch.no_grad()
    def targets(self, inputs: Tensor, targets: Tensor, valid: Tensor) -> tuple[Tensor, ...]:
        """``(condition, residual, weight)`` of a training batch (frozen stages, no gradient).

        ``residual`` is the observed latents over the deterministic ones divided by
        ``residual_scale``; ``weight`` the fraction of observed pixels of each latent cell.
        """
        x = self._clip(inputs)
        condition, det = self.condition(x)
        observed = self.encode(self._clip(targets[:, : self.lead_frames]))
        residual = (observed - det) * self.latent_scale / self._lead_scale()
        known = valid[:, : self.lead_frames].float().flatten(0, 1)
        weight = F.avg_pool2d(known, self.factor).unflatten(0, (valid.shape[0], -1))
        return condition, residual, weight

    def training_loss(
        self,
        inputs: Tensor,
        targets: Tensor,
        valid: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The denoiser's v-prediction loss on a batch of sequences (mm/h; ``valid`` masks)."""
        if targets.shape[1] < self.lead_frames:
            raise ModelError(f"cascast trains on {self.lead_frames} lead times")
        return self.loss_on_targets(*self.targets(inputs, targets, valid), generator=generator)

    def loss_on_targets(
        self,
        condition: Tensor,
        residual: Tensor,
        weight: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The v-prediction loss on the output of :meth:`targets` (a fresh diffusion step)."""
        return diffusion_loss(
            self._denoiser(condition),
            self.schedule,
            residual,
            weight=weight,
            drop_prob=float(self.config["drop_prob"]),
            generator=generator,
        )

    def _lead_scale(self) -> Tensor:
        """``residual_scale`` shaped to divide a ``(B, lead_frames, C, h, w)`` residual."""
        return self.residual_scale.view(1, -1, 1, 1, 1)

    @torch.no_grad()
    def set_scales(
        self, inputs: Tensor, targets: Tensor, valid: Tensor, *, per_lead: bool = True
    ) -> dict[str, Any]:
        """Set ``latent_scale`` and ``residual_scale`` to the std of a batch's latents.

        With ``per_lead`` the residual gets one scale per lead time (its rms at that
        lead), so that the diffusion sees a residual of unit size at every lead: the
        5-minute residual is a third of the 90-minute one, and under one common scale
        the denoiser's errors at short leads are large beside it.  Without it one scale
        serves every lead (the files trained before session 10).
        """
        self.latent_scale.fill_(1.0)
        self.residual_scale.fill_(1.0)
        latents = self.encode(self._clip(inputs))
        self.latent_scale.fill_(float(latents.std().clamp_min(1e-3)))
        _, residual, weight = self.targets(inputs, targets, valid)
        w = weight.expand_as(residual)
        dims = (0, 2, 3, 4) if per_lead else tuple(range(residual.ndim))
        std = ((residual**2 * w).sum(dims) / w.sum(dims).clamp_min(1.0)).sqrt().clamp_min(1e-6)
        self.residual_scale.copy_(std.expand_as(self.residual_scale))
        scale = [round(float(v), 5) for v in std.reshape(-1)] if per_lead else float(std)
        return {"latent_scale": float(self.latent_scale), "residual_scale": scale}

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Read a file whose ``residual_scale`` is one number: the same scale at every lead."""
        key = prefix + "residual_scale"
        if key in state_dict and state_dict[key].ndim == 0:
            state_dict[key] = state_dict[key].expand(self.lead_frames).clone()
        super()._load_from_state_dict(state_dict, prefix, *args)

    def train(self, mode: bool = True) -> CasCast:
        """Training mode for the denoiser only: the frozen stages stay in eval mode."""
        super().train(mode)
        self.autoencoder.eval()
        self.backbone.eval()
        return self


def _build_backbone(name: str, config: Any) -> nn.Module:
    """The deterministic stage: a registered nowcaster with its shipped default weights."""
    spec = get_spec(name, "nowcast")
    if spec.stochastic or spec.name == "cascast":
        raise ModelError(
            f"cascast: the backbone must be a deterministic nowcaster, not {name!r} "
            "(extrapolation, convlstm, unet, persistence)"
        )
    model = spec.build(config)
    path, sha256 = resolve_weights(spec, "default")
    if path is not None and config in (None, spec.default_config):
        state, _ = load_state_dict(path, sha256=sha256, device="cpu")
        model.load_state_dict(state)
    return model


def build_cascast(config: str | dict[str, Any] = "small") -> CasCast:
    """Build CasCast from a name in :data:`CONFIGS` or a dict of overrides of "small"."""
    return CasCast(**config_settings(config, CONFIGS, "cascast"))


#: How to get weights (the registry's error when none are given).
HOW_TO_TRAIN = (
    "train them with `python -m xnowcast.training.cascast --data-root DATA --out DIR "
    "--autoencoder AE.safetensors` (AE from `python -m xnowcast.training.autoencoder`) and "
    "pass weights='DIR/cascast.safetensors'"
)

SPEC = register(
    ModelSpec(
        name="cascast",
        task="nowcast",
        builder="xnowcast.models.cascast:build_cascast",
        summary=(
            "CasCast: a deterministic nowcast (extrapolation by default) refined by latent "
            "diffusion (CasFormer denoiser, DDIM, classifier-free guidance); ensembles by "
            "sampling."
        ),
        reference="Gong et al. (2024), ICML, PMLR 235",
        time_step_minutes=5.0,
        normalisation=(
            "frames encoded by a frame autoencoder (log1p(R)/log1p(128) in); diffusion of the "
            "latent residual over the deterministic stage's latents"
        ),
        default_config="small",
        stochastic=True,
        input_frames=int(CONFIGS["small"]["input_frames"]),
        interface=cascast_interface,
        weights={
            "small": WeightsFile(
                "cascast-small.safetensors",
                "6148fdbba961231d9e46875ab2109e74f13aef6c1546ac62d2bbcfbe56131a23",
            )
        },
        default_weights="small",
        weights_required=HOW_TO_TRAIN,
    )
)
