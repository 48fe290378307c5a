"""A self-supervised encoder of radar rain fields and the distance it defines (AtmoDist-style).

The pretext task follows Hoffmann & Lessig (2021, "Towards representation
learning for atmospheric dynamics", NeurIPS workshop Tackling Climate Change
with ML): two patches cut at the **same place** of one 5-minute radar sequence,
``lag`` frames apart, go through one encoder; a small tail network reads the two
representations (their absolute difference and their mean, so that the lag is
learned from the difference the distance below measures) and classifies the
time lag (classes 5 to 60 minutes).  To tell 10 from 40 minutes the encoder has to capture how radar
fields evolve (growth, decay, advection of small cells), not only their mean.

:class:`RadarEncoder` is fully convolutional, so after training it maps a whole
field of rain rate (1 km cells, mm/h) to a representation map four times
coarser.  :meth:`RadarEncoder.distance` is the mean squared difference of two
such maps, divided by ``distance_scale``: the mean of that same quantity between
patches 60 minutes apart on the training events (measured after training and
stored with the weights).  So

* ``0`` means the encoder sees no difference (identical fields give exactly 0);
* ``1`` means as different as a radar field and the same place an hour later,
  on average over the training events' rainy patches;
* dry areas where both fields are dry add 0, so the mean over a mostly dry
  domain is smaller than over its rainy part.

Inputs are rain rate in mm/h, log-transformed inside
(``log1p(R) / log1p(10 mm/h)``); missing cells must be masked by the caller
(:meth:`RadarEncoder.distance` takes a ``known`` mask).  Nothing here imports
xarray.

The model is registered under the task ``representation`` (``atmodist``): the
registry holds its shipped weights and their sha256, and ``xnowcast train
atmodist`` trains it (:mod:`xnowcast.training.lightning`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xnowcast.errors import ModelError, WeightsError
from xnowcast.registry import ModelSpec, WeightsFile, register

__all__ = [
    "ATMODIST_CONFIGS",
    "ATMODIST_WEIGHTS",
    "SPEC",
    "LagClassifier",
    "RadarEncoder",
    "build_lag_classifier",
    "load_encoder",
]

#: The shipped encoder (``xnowcast/weights/``): file name and sha256.
ATMODIST_WEIGHTS = (
    "atmodist-radar.safetensors",
    "44ff2ce29bf1a3322577ee888771d0364f6f70f5cc4833098c732fccafd0cdc8",
)

ATMODIST_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"preset": "small"},
    "small": {
        "width": 32,
        "lags": [1, 2, 3, 4, 6, 8, 10, 12],
        "patch": 48,
        "transform_scale": 10.0,
    },
    "tiny": {"width": 8, "lags": [1, 2, 4], "patch": 24, "transform_scale": 10.0},
}


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    # replicate padding: a uniform field stays uniform up to the borders
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, padding_mode="replicate")


class RadarEncoder(nn.Module):
    """Fully convolutional encoder: rain rate ``(N, 1, H, W)`` -> ``(N, 2*width, H/4, W/4)``.

    Parameters
    ----------
    width
        Channels of the first level (the representation has ``2 * width``).
    transform_scale
        Rain rate mapped to 1 by the input transform ``log1p(R) / log1p(scale)``.
    """

    #: Spatial reduction of the representation map.
    reduction = 4

    def __init__(self, width: int = 32, transform_scale: float = 10.0) -> None:
        super().__init__()
        self.transform_scale = float(transform_scale)
        act = nn.LeakyReLU(0.2)
        self.body = nn.Sequential(
            _conv(1, width), act,
            _conv(width, width, 2), act,
            _conv(width, width), act,
            _conv(width, 2 * width, 2), act,
            _conv(2 * width, 2 * width),
        )  # fmt: skip
        self.register_buffer("distance_scale", torch.ones(()))

    def forward(self, rate: Tensor) -> Tensor:
        """The representation map of rain rate in mm/h (pad H, W to multiples of 4 first)."""
        z = torch.log1p(rate.clamp_min(0)) / math.log1p(self.transform_scale)
        return self.body(z)

    def feature_difference(self, a: Tensor, b: Tensor) -> Tensor:
        """Per-position squared representation difference ``(N, H/4, W/4)`` (channel mean)."""
        fa, fb = self(torch.cat([a, b])).chunk(2)
        return (fa - fb).pow(2).mean(1)

    def distance(self, a: Tensor, b: Tensor, known: Tensor | None = None) -> Tensor:
        """Learned distance between rain-rate fields ``(N, 1, H, W)``, one value per field.

        Parameters
        ----------
        a, b
            Rain rate in mm/h; missing cells may hold anything where ``known`` is False.
        known
            ``(N, 1, H, W)`` bool, True where both fields are observed (default: all).
            Unknown cells are set to 0 in both fields and the representation
            positions whose 4 x 4 cell block is not wholly known are left out.

        Returns
        -------
        Tensor
            ``(N,)``, 0 for identical fields, in units of ``distance_scale`` (see the
            module docstring); NaN where no position is known.
        """
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 1:
            raise ModelError(f"fields must both be (N, 1, H, W); got {a.shape} and {b.shape}")
        r = self.reduction
        h, w = a.shape[-2:]
        pad = (0, -w % r, 0, -h % r)
        if known is None:
            known = torch.ones_like(a, dtype=torch.bool)
        a = F.pad(torch.where(known, a, 0), pad, mode="replicate")
        b = F.pad(torch.where(known, b, 0), pad, mode="replicate")
        weight = -F.max_pool2d(-F.pad(known.to(a.dtype), pad), r)[:, 0]  # 1 where all known
        diff = self.feature_difference(a, b) * weight
        total = weight.sum((1, 2))
        mean = diff.sum((1, 2)) / total.clamp_min(1)
        return torch.where(total > 0, mean / self.distance_scale, torch.nan)


class LagClassifier(nn.Module):
    """The pretext network: a shared :class:`RadarEncoder` and a tail classifying the lag.

    ``forward(first, second)`` takes two patches ``(N, 1, P, P)`` (mm/h) of the same
    place and returns logits ``(N, len(lags))``.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        width = int(config["width"])
        self.lags = [int(v) for v in config["lags"]]
        self.encoder = RadarEncoder(width, float(config["transform_scale"]))
        act = nn.LeakyReLU(0.2)
        self.tail = nn.Sequential(
            nn.Conv2d(4 * width, 2 * width, 3, stride=2, padding=1), act,
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), act,
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(2 * width, len(self.lags)),
        )  # fmt: skip

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        fa, fb = self.encoder(torch.cat([first, second])).chunk(2)
        # the tail reads how far apart the representations are (and where): the lag is
        # learned as a function of the representation difference the distance measures
        return self.tail(torch.cat([(fa - fb).abs(), (fa + fb) / 2], 1))


def build_lag_classifier(config: str | dict[str, Any] = "default") -> LagClassifier:
    """The pretext network from a preset name of :data:`ATMODIST_CONFIGS` or a full dict."""
    if isinstance(config, str):
        name = ATMODIST_CONFIGS["default"]["preset"] if config == "default" else config
        if name not in ATMODIST_CONFIGS:
            raise ModelError(
                f"no AtmoDist config {config!r}; choose one of {list(ATMODIST_CONFIGS)}"
            )
        config = {**ATMODIST_CONFIGS[name], "preset": name}
    missing = {"width", "lags", "patch", "transform_scale"} - set(config)
    if missing:
        raise ModelError(f"AtmoDist config lacks {sorted(missing)}")
    return LagClassifier(config)


_ENCODERS: dict[str, RadarEncoder] = {}


def load_encoder(path: str | None = None, sha256: str | None = None) -> RadarEncoder:
    """The trained encoder (cached, eval mode, no gradients).

    Parameters
    ----------
    path, sha256
        A weights file of the lag classifier (written by ``xnowcast train atmodist`` or
        :mod:`xnowcast.training.srgan_run`) and its expected digest (None: not checked);
        default: the shipped weights of :data:`SPEC` (:data:`ATMODIST_WEIGHTS`).
    """
    from xnowcast.weights import load_state_dict

    if path is None:
        shipped = SPEC.weights[SPEC.default_weights or "radar"]
        path, sha256 = str(shipped.path), shipped.sha256
    path = str(path)
    key = f"{path}:{sha256}"
    if key not in _ENCODERS:
        state, metadata = load_state_dict(path, sha256=sha256)
        if metadata.get("model", "atmodist") != "atmodist":
            raise WeightsError(
                f"{path} holds weights of {metadata['model']!r}, not of the AtmoDist encoder: "
                "give a file written by `xnowcast train atmodist`"
            )
        net = build_lag_classifier(metadata.get("config", "default"))
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise WeightsError(
                f"{path} does not fit the AtmoDist encoder of its stored config: "
                f"{str(err).splitlines()[0]}"
            ) from None
        encoder = net.encoder.eval()
        for parameter in encoder.parameters():
            parameter.requires_grad_(False)
        _ENCODERS[key] = encoder
    return _ENCODERS[key]


SPEC = register(
    ModelSpec(
        name="atmodist",
        task="representation",
        builder="xnowcast.models.atmodist:build_lag_classifier",
        summary="self-supervised radar encoder (time-lag classification); its learned "
        "distance is verify's 'atmodist' metric and srgan's content loss",
        reference="Hoffmann & Lessig 2021 (AtmoDist)",
        time_step_minutes=5.0,
        normalisation="log1p(R) / log1p(10 mm/h) inside the encoder",
        default_config="small",
        weights={"radar": WeightsFile(*ATMODIST_WEIGHTS)},
        default_weights="radar",
    )
)
