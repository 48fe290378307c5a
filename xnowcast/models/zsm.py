"""Zooming Slow-Mo (ZSM) and the Feature-Constrained ZSM (FC-ZSM) for rain downscaling.

ZSM (Xiang et al. 2020, "Zooming Slow-Mo", CVPR) turns ``T`` coarse frames into
``(T-1)*tf + 1`` fine frames in one network:

1. **feature extraction**: a 3x3 conv and ``k1`` residual blocks per input
   frame, plus a feature pyramid (stride-2 convs) for the alignment below;
2. **frame feature temporal interpolation**: the features of an inserted frame
   are ``F2 = a(T1(F1, dp1)) + b(T3(F3, dp3))``, where ``T`` is a deformable
   convolution sampling a neighbour's features with offsets
   ``dp1 = g1([F1, F3])``, ``dp3 = g3([F3, F1])`` (predicted coarse-to-fine
   over the pyramid) and ``a``, ``b`` are learnable 1x1 convolutions;
3. **bidirectional deformable ConvLSTM** over the ``(T-1)*tf + 1`` feature
   maps: before each update the hidden and cell states are aligned to the
   current frame's features by deformable convolutions whose offsets come from
   ``[h, F_t]``; the forward and backward passes are fused by a 1x1 conv;
4. **reconstruction**: ``k2`` residual blocks, sub-pixel (pixel-shuffle)
   upsampling by ``factor`` and two convs, per frame.

FC-ZSM (Chen, Qin and Dai 2022, Front. Earth Sci. 10:887842) adds a parallel
extractor of **static** fields given on the fine grid (the paper: terrain
height, land-sea mask; here by default the radar coverage mask and the
normalised projected x and y) whose features ``Fs`` join every offset
predictor: ``dp = g([F1, F3, Fs])`` (and ``g([h, F_t, Fs])`` in the ConvLSTM).
**Dynamic** fields are stacked with the rain rate as extra input channels.

Differences from the papers (all deliberate, see the report in the docs):

* **motion prior**: the ``flow`` downscaler (:mod:`xnowcast.models.flow`) runs
  first.  Its optical flow guides every deformable convolution: the offsets
  are ``flow + max_offset * tanh(learned)`` (the learned residual is
  zero-initialised and bounded), i.e. a neighbour's features are sampled
  around the point the flow says the rain comes from (``x - s u`` from the
  earlier frame, ``x + (1 - s) u`` from the later one, ``x -+ u / tf`` for the
  ConvLSTM states);
* the network predicts a **residual over the flow baseline** in the output
  space ``z = log1p(R) / log1p(10)`` (the paper's dBZ [15, 70] preprocessing is
  the ``"dbz"`` transform of the ``paper`` preset), with a zero-initialised
  last layer; the reconstruction sees the baseline as an extra channel;
* **consistency**: the output frames at input times are scaled block by block
  so that their ``f x f`` block means equal the input (as the baseline's do);
  an untrained model therefore *is* the ``flow`` baseline;
* the ConvLSTM aligns ``h`` and ``c`` with two deformable convolutions sharing
  one offset prediction (ZSM predicts two), and its output is added to the
  frame features (a skip connection);
* no cascaded deformable conv after the pyramid alignment.

Public entry points: :func:`build_zsm` and :func:`build_fczsm` (registered as
``zsm`` and ``fczsm``; :func:`xnowcast.registry.build_model` builds any model by name).
This module holds the configs, builders and specs; the network itself is in
:mod:`xnowcast.models.zsm_network` (:class:`ZSM` is re-exported here).
"""

from __future__ import annotations

from typing import Any

from xnowcast.errors import ModelError
from xnowcast.models.flow import FLOW_CONFIGS
from xnowcast.models.interpolation import resolve_config
from xnowcast.models.zsm_network import ZSM, ResidualBlock, upsample_stages
from xnowcast.registry import ModelSpec, WeightsFile, register

__all__ = [
    "FCZSM_CONFIGS",
    "ZSM",
    "ZSM_CONFIGS",
    "ResidualBlock",
    "build_fczsm",
    "build_zsm",
    "upsample_stages",
]

_COMMON: dict[str, Any] = {
    "in_channels": 1,
    "dynamic_mean": [],
    "dynamic_std": [],
    "static_channels": 0,
    "static_names": [],
    "window": 4,
    "modulated": True,
    "max_offset": 4.0,
    "transform": "log",
    "input_transform": "log",
    "transform_scale": 10.0,
    "motion_prior": "flow",
    "flow_preset": FLOW_CONFIGS["default"]["preset"],
}

# Preset names carry ``flow`` since the architecture stands on the flow prior: the configs
# stored in the retired weights of the trilinear-residual ZSM ("compact", "paper", "tiny")
# are refused instead of being loaded into a different network.
ZSM_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"preset": "flow-compact"},
    # Sizes of the papers (k1 = 5, k2 = 10, 64 features, 8 deformable groups,
    # 3 pyramid levels) and the FC-ZSM paper's dBZ preprocessing.
    "flow-paper": {
        **_COMMON,
        "nf": 64,
        "k1": 5,
        "k2": 10,
        "groups": 8,
        "levels": 3,
        "static_nf": 0,
        "static_blocks": 0,
        "transform": "dbz",
        "input_transform": "dbz",
    },
    # Small enough to train on a CPU in minutes and ship in a few hundred kB.
    "flow-compact": {
        **_COMMON,
        "nf": 16,
        "k1": 3,
        "k2": 4,
        "groups": 4,
        "levels": 2,
        "static_nf": 0,
        "static_blocks": 0,
    },
    # For tests.
    "flow-tiny": {
        **_COMMON,
        "nf": 8,
        "k1": 1,
        "k2": 1,
        "groups": 2,
        "levels": 2,
        "static_nf": 0,
        "static_blocks": 0,
    },
}

_STATIC: dict[str, Any] = {"static_channels": 3, "static_names": ["coverage", "x", "y"]}
FCZSM_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"preset": "flow-compact"},
    "flow-paper": {**ZSM_CONFIGS["flow-paper"], **_STATIC, "static_nf": 64, "static_blocks": 5},
    "flow-compact": {
        **ZSM_CONFIGS["flow-compact"],
        **_STATIC,
        "static_nf": 8,
        "static_blocks": 1,
    },
    "flow-tiny": {**ZSM_CONFIGS["flow-tiny"], **_STATIC, "static_nf": 4, "static_blocks": 1},
}


def _build(name: str, presets: dict, config: Any, factor: int, time_factor: int) -> ZSM:
    (ZSM_SPEC if name == "zsm" else FCZSM_SPEC).check_factors(factor, time_factor)
    cfg = resolve_config(name, config, presets)
    if name == "fczsm" and (int(cfg["static_channels"]) < 1 or int(cfg["static_nf"]) < 1):
        raise ModelError("fczsm needs static_channels >= 1 and static_nf >= 1 (else use zsm)")
    if name == "zsm" and int(cfg["static_channels"]):
        raise ModelError("zsm takes no static fields; use fczsm for static_channels > 0")
    if len(cfg["static_names"]) != int(cfg["static_channels"]):
        raise ModelError("static_names must name each of the static_channels")
    model = ZSM(cfg, factor, time_factor)
    model.config["model"] = name
    return model


def build_zsm(config: str | dict = "default", factor: int = 2, time_factor: int = 2) -> ZSM:
    """Zooming Slow-Mo.  ``config``: a preset of :data:`ZSM_CONFIGS` or a dict of overrides."""
    return _build("zsm", ZSM_CONFIGS, config, factor, time_factor)


def build_fczsm(config: str | dict = "default", factor: int = 2, time_factor: int = 2) -> ZSM:
    """FC-ZSM.  ``config``: a preset of :data:`FCZSM_CONFIGS` or a dict of overrides."""
    return _build("fczsm", FCZSM_CONFIGS, config, factor, time_factor)


_PAPER = "Chen, Qin & Dai (2022), Front. Earth Sci. 10:887842"
# ZSM / FC-ZSM stand on the ``flow`` baseline (flow-guided offsets, residual output): their
# weights are named ``*-flowprior`` and their presets ``flow-*``, so that the retired
# ``*-compact`` weights of the old trilinear-residual architecture are never loaded into them.
_ZSM_COMMON: dict[str, Any] = {
    "task": "downscale",
    "normalisation": "log1p(R)/log1p(10) inside the module; residual over the flow baseline",
    "default_config": "default",
    # pixel-shuffle stages; one interpolation module per inserted frame
    "factors": (1, 2, 3, 4),
    "time_factors": (1, 2, 3, 4),
    "window": 4,
}
ZSM_SPEC = register(
    ModelSpec(
        name="zsm",
        builder="xnowcast.models.zsm:build_zsm",
        summary="Zooming Slow-Mo on the flow prior: flow-guided deformable interpolation + "
        "bidirectional deformable ConvLSTM, a residual over the flow baseline.",
        reference=f"Xiang et al. (2020), CVPR; {_PAPER}",
        weights={
            "flowprior": WeightsFile(
                "zsm-flowprior.safetensors",
                "65669581546b35f4b276b77ca9bda79642bb57bbe0cdcda3cfc0a805e93d21a3",
            )
        },
        default_weights="flowprior",
        **_ZSM_COMMON,
    )
)
FCZSM_SPEC = register(
    ModelSpec(
        name="fczsm",
        builder="xnowcast.models.zsm:build_fczsm",
        summary="Feature-Constrained ZSM on the flow prior: static fields (coverage, x, y) steer "
        "the flow-guided deformable offsets.",
        reference=_PAPER,
        static_channels=len(_STATIC["static_names"]),
        weights={
            "flowprior": WeightsFile(
                "fczsm-flowprior.safetensors",
                "166d15fdb7b5f1025d1f8dace0d3fc64938db3abd12b1cbc829b4201652c977c",
            )
        },
        default_weights="flowprior",
        **_ZSM_COMMON,
    )
)
