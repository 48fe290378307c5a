"""Persistence and optical-flow extrapolation baselines on rain moved by a known wind."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from xnowcast.errors import ModelError  # noqa: E402
from xnowcast.models.advection import semi_lagrangian  # noqa: E402
from xnowcast.models.extrapolation import build_extrapolation  # noqa: E402
from xnowcast.models.persistence import build_persistence  # noqa: E402

SIZE = 128
WIND = (2.0, 1.0)  # (u, v): pixels per step along x (columns) and y (rows)
N_IN, STEPS = 4, 6  # 6 x 5 min = 30 min


def rain_cells(
    t: float, wind: tuple[float, float] = WIND, seed: int = 0, size: int = SIZE
) -> torch.Tensor:
    """Gaussian rain cells (mm/h) at time step ``t``, carried by ``wind``; float64 (H, W)."""
    gen = torch.Generator().manual_seed(seed)
    n = 7
    cy = torch.rand(n, generator=gen, dtype=torch.float64) * size
    cx = torch.rand(n, generator=gen, dtype=torch.float64) * size
    radius = 4.0 + 8.0 * torch.rand(n, generator=gen, dtype=torch.float64)
    peak = 5.0 + 30.0 * torch.rand(n, generator=gen, dtype=torch.float64)
    axis = torch.arange(size, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    u, v = wind
    field = torch.zeros(size, size, dtype=torch.float64)
    for i in range(n):
        d2 = (yy - cy[i] - v * t) ** 2 + (xx - cx[i] - u * t) ** 2
        field += peak[i] * torch.exp(-d2 / (2.0 * radius[i] ** 2))
    return field


def sequence(
    wind: tuple[float, float] = WIND, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (1, N_IN, 1, H, W) and the true future frames (STEPS, H, W)."""
    frames = torch.stack([rain_cells(t, wind, seed) for t in range(N_IN + STEPS)]).to(dtype)
    return frames[:N_IN].reshape(1, N_IN, 1, SIZE, SIZE), frames[N_IN:]


def csi(forecast: torch.Tensor, observed: torch.Tensor, threshold: float = 1.0) -> float:
    """Critical success index on the pixels where the forecast is known."""
    known = ~torch.isnan(forecast)
    f = forecast[known] >= threshold
    o = observed[known] >= threshold
    hits = (f & o).sum()
    return float(hits / (hits + (f & ~o).sum() + (~f & o).sum()))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these small fields gain nothing from more, and a busy machine
    makes every parallel region wait for a descheduled thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return build_extrapolation()


@pytest.fixture(scope="module")
def moving():
    return sequence()


def test_extrapolation_reproduces_future_frames(model, moving):
    inputs, future = moving
    forecast = model(inputs, STEPS)
    assert forecast.shape == (1, STEPS, 1, SIZE, SIZE)
    scores = [csi(forecast[0, k, 0], future[k]) for k in range(STEPS)]
    assert scores[-1] >= 0.9, scores
    # Values follow the cells too, not only the 1 mm/h contour.
    known = ~torch.isnan(forecast[0, -1, 0])
    error = (forecast[0, -1, 0][known] - future[-1][known]).abs().mean()
    persistence_error = (inputs[0, -1, 0][known] - future[-1][known]).abs().mean()
    assert float(error) < 0.1 * float(persistence_error)
    assert known.float().mean() > 0.8


def test_motion_recovers_the_wind(model, moving):
    inputs, _ = moving
    flow = model.motion(inputs[:, -model.input_frames :])
    assert flow.shape == (1, 2, SIZE, SIZE)
    rain = inputs[0, -1, 0] >= 1.0
    u, v = flow[0, 0][rain], flow[0, 1][rain]
    assert abs(float(u.mean()) - WIND[0]) < 0.2
    assert abs(float(v.mean()) - WIND[1]) < 0.2
    assert float((u - WIND[0]).abs().quantile(0.95)) < 0.2
    assert float((v - WIND[1]).abs().quantile(0.95)) < 0.2
    # Dry pixels get the motion of the rain around them, not zero.
    dry = inputs[0, -1, 0] < 0.01
    assert abs(float(flow[0, 0][dry].median()) - WIND[0]) < 0.3


def test_motion_recovers_another_wind():
    wind = (-1.5, 2.5)
    inputs, future = sequence(wind=wind, seed=3)
    model = build_extrapolation()
    flow = model.motion(inputs[:, -model.input_frames :])
    rain = inputs[0, -1, 0] >= 1.0
    assert abs(float(flow[0, 0][rain].mean()) - wind[0]) < 0.2
    assert abs(float(flow[0, 1][rain].mean()) - wind[1]) < 0.2
    assert csi(model(inputs, STEPS)[0, -1, 0], future[-1]) >= 0.9


def test_persistence_holds_the_last_frame_and_falls_short(moving):
    inputs, future = moving
    forecast = build_persistence()(inputs, STEPS)
    assert forecast.shape == (1, STEPS, 1, SIZE, SIZE)
    for k in range(STEPS):
        assert torch.equal(forecast[0, k, 0], inputs[0, -1, 0])
    assert csi(forecast[0, -1, 0], future[-1]) < 0.9


def test_inflow_region_is_nan(model, moving):
    inputs, _ = moving
    forecast = model(inputs, STEPS)[0, :, 0]
    u, v = WIND
    for k in (1, STEPS):
        # Backward trajectories from the upwind edge leave the domain after k steps.
        nan = torch.isnan(forecast[k - 1])
        assert nan[:, : int(k * u) - 1].all()
        assert nan[: int(k * v) - 1, :].all()
        assert not nan[int(k * v) + 1 :, int(k * u) + 1 :].any()


def test_invalid_input_region_is_nan_where_advected_from(model, moving):
    inputs, _ = moving
    valid = torch.ones_like(inputs, dtype=torch.bool)
    valid[..., 50:80, 40:70] = False  # e.g. a radar outage
    filled = inputs.masked_fill(~valid, 0.0)
    forecast = model(filled, STEPS, valid=valid)[0, :, 0]
    # The motion is still right: invalid pixels take no part in the fit.
    flow = model.motion(filled[:, -model.input_frames :], valid[:, -model.input_frames :])
    rain = (inputs[0, -1, 0] >= 1.0) & valid[0, -1, 0]
    assert abs(float(flow[0, 0][rain].mean()) - WIND[0]) < 0.2
    u, v = WIND
    for k in (2, STEPS):
        dy, dx = int(k * v), int(k * u)
        nan = torch.isnan(forecast[k - 1])
        # The outage, moved downwind, is unknown (1-pixel tolerance at its edges) ...
        assert nan[51 + dy : 79 + dy, 41 + dx : 69 + dx].all()
        # ... and the pixels it has left behind are known again.
        assert not nan[51 : 50 + dy - 1, 41:69].any()
        assert not nan[51:79, 41 : 40 + dx - 1].any()


def test_nan_left_in_the_input_counts_as_unobserved(model, moving):
    inputs, _ = moving
    valid = torch.ones_like(inputs, dtype=torch.bool)
    valid[..., 50:80, 40:70] = False
    with_nan = model(inputs.masked_fill(~valid, float("nan")), STEPS)
    with_mask = model(inputs.masked_fill(~valid, 0.0), STEPS, valid=valid)
    torch.testing.assert_close(with_nan, with_mask, equal_nan=True)


def test_persistence_nan_where_last_frame_invalid(moving):
    inputs, _ = moving
    valid = torch.ones_like(inputs, dtype=torch.bool)
    valid[:, -1, :, 10:20, 30:40] = False
    valid[:, 0, :, 100:110, :] = False  # older frames do not matter
    forecast = build_persistence()(inputs.masked_fill(~valid, 0.0), 3, valid=valid)
    expected = ~valid[:, -1:].expand(-1, 3, -1, -1, -1)
    assert torch.equal(torch.isnan(forecast), expected)


def test_deterministic_and_generator_ignored(model, moving):
    inputs, _ = moving
    first = model(inputs, 3)
    second = model(inputs, 3, generator=torch.Generator().manual_seed(123))
    torch.testing.assert_close(first, second, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_batch(model, dtype):
    winds = [WIND, (-1.0, 1.5)]
    pairs = [sequence(wind=w, seed=s, dtype=dtype) for s, w in enumerate(winds)]
    batch, futures = [p[0] for p in pairs], [p[1] for p in pairs]
    inputs = torch.cat(batch)
    forecast = model(inputs, STEPS)
    assert forecast.dtype == dtype
    assert forecast.shape == (2, STEPS, 1, SIZE, SIZE)
    # Each sample gets its own motion: batched equals one at a time.
    for i in range(2):
        single = model(inputs[i : i + 1], STEPS)
        torch.testing.assert_close(forecast[i : i + 1], single, equal_nan=True)
        assert csi(forecast[i, -1, 0], futures[i][-1].to(dtype)) >= 0.9
    persistence = build_persistence()(inputs, 2)
    assert persistence.dtype == dtype


def test_dry_input_gives_dry_forecast(model):
    inputs = torch.zeros(1, 3, 1, 40, 50)
    forecast = model(inputs, 4)
    assert torch.equal(forecast, torch.zeros(1, 4, 1, 40, 50))


def test_more_frames_than_needed_uses_the_last_ones(model, moving):
    inputs, _ = moving
    longer = torch.cat((torch.full_like(inputs[:, :2], 50.0), inputs), dim=1)
    torch.testing.assert_close(model(longer, 2), model(inputs, 2), equal_nan=True)


def test_contract_attributes():
    persistence, extrapolation = build_persistence(), build_extrapolation()
    assert persistence.input_frames == 1
    assert extrapolation.input_frames == extrapolation.config["input_frames"] >= 2
    for m in (persistence, extrapolation):
        assert m.spatial_multiple == 1
        assert m.accepts_mask is True
        assert isinstance(m.config, dict)
    custom = build_extrapolation({"input_frames": 4, "window_sigma": 6.0})
    assert custom.input_frames == 4
    assert custom.config["window_sigma"] == 6.0


def test_bad_calls_raise_model_error(model, moving):
    inputs, _ = moving
    with pytest.raises(ModelError, match="input frames"):
        model(inputs[:, :1], 2)
    with pytest.raises(ModelError, match="steps"):
        model(inputs, 0)
    with pytest.raises(ModelError, match="shaped"):
        model(inputs[:, :, 0], 2)
    with pytest.raises(ModelError, match="valid"):
        model(inputs, 2, valid=torch.ones(1, 2, 1, SIZE, SIZE, dtype=torch.bool))
    with pytest.raises(ModelError, match="default"):
        build_extrapolation("nope")
    with pytest.raises(ModelError, match="window_sigma"):
        build_extrapolation({"window_sigmaa": 3.0})
    with pytest.raises(ModelError, match="input_frames"):
        build_extrapolation({"input_frames": 1})
    with pytest.raises(ModelError, match="regularization"):
        build_extrapolation({"regularization": 0.0})
    with pytest.raises(ModelError, match="no configuration"):
        build_persistence({"x": 1})


def test_real_event_beats_persistence_and_keeps_radar_range(shared_data, model):
    np = pytest.importorskip("numpy")
    from xnowcast.io import open_radar

    files = sorted((shared_data / "radar" / "rmi" / "radqpe" / "20210704").glob("*.hdf"))
    rate = open_radar(files[8:17])["precipitation"].values  # mm/h, NaN outside radar range
    inputs, observed = rate[:3], rate[-1]  # 30 min after the last input
    valid = np.isfinite(inputs)
    forecast = model(
        torch.from_numpy(np.where(valid, inputs, 0.0))[None, :, None],
        STEPS,
        valid=torch.from_numpy(valid)[None, :, None],
    )[0, -1, 0].numpy()
    known = np.isfinite(forecast) & np.isfinite(observed)
    ours = csi(torch.from_numpy(forecast[known]), torch.from_numpy(observed[known]))
    held = csi(torch.from_numpy(inputs[-1][known]), torch.from_numpy(observed[known]))
    assert ours > 0.35
    assert ours > 1.5 * held
    # Outside radar range stays unknown (it moves by the motion, a few pixels at most).
    assert abs(np.isnan(forecast).mean() - (~valid[-1]).mean()) < 0.02
    assert np.isnan(forecast[:5, :5]).all()  # a corner far outside the radar range


def rotation(size: int, omega: float, centre: tuple[float, float]) -> torch.Tensor:
    """Solid-body rotation (1, 2, size, size), ``omega`` radians per step about ``centre``."""
    axis = torch.arange(size, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    cy, cx = centre
    return torch.stack((-omega * (yy - cy), omega * (xx - cx))).unsqueeze(0)


def test_trajectories_follow_curved_flow():
    # A blob carried 18 steps around a circle: a straight shift of 18 * v would end
    # ~10 px outside the circle; stepping back along the flow keeps it on it.
    size, omega, steps = 128, 0.05, 18
    axis = torch.arange(size, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    blob = 20.0 * torch.exp(-((yy - 64.0) ** 2 + (xx - 94.0) ** 2) / (2 * 4.0**2))
    out = semi_lagrangian(blob[None, None], rotation(size, omega, (64.0, 64.0)), steps)
    last = torch.nan_to_num(out[0, -1, 0])
    cy, cx = float((last * yy).sum() / last.sum()), float((last * xx).sum() / last.sum())
    angle = omega * steps
    expected_x = 64.0 + 30.0 * torch.cos(torch.tensor(angle))
    expected_y = 64.0 + 30.0 * torch.sin(torch.tensor(angle))
    assert abs(cx - float(expected_x)) < 1.0
    assert abs(cy - float(expected_y)) < 1.0
    assert float(last.max()) > 15.0  # sampled from the observation, not smeared step by step


def test_trajectory_that_leaves_the_domain_stays_unknown():
    # Rotation about a point on the left edge: backward trajectories near it cross
    # the edge, and some come back in; all of those are unknown.
    size, steps = 64, 12
    flow = rotation(size, 0.15, (32.0, 0.0))
    field = torch.ones(1, 1, size, size, dtype=torch.float64)
    out = semi_lagrangian(field, flow, steps, trajectory_scale=1)[0, :, 0]
    axis = torch.arange(size, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    # Exact circles about (32, 0): a pixel at radius r leaves the domain (x < -0.5)
    # within k steps when its backward arc of angle 0.15 k crosses the edge.
    radius = torch.hypot(yy - 32.0, xx)
    phase = torch.atan2(yy - 32.0, xx)  # in (-pi/2, pi/2) inside the domain
    for k in (4, steps):
        crossed = (phase - 0.15 * k < -torch.pi / 2 - 0.1) & (radius > 3.0)
        nan = torch.isnan(out[k - 1])
        assert nan[crossed & (radius < 28)].float().mean() > 0.97
        assert not nan[(phase - 0.15 * k > -torch.pi / 2 + 0.1) & (radius < 28)].any()
    # Known values are the field's (1 everywhere), untouched by the trajectory.
    assert torch.allclose(out[~torch.isnan(out)], torch.ones(1, dtype=torch.float64))


def blob_sequence(size: int = 96, wind: tuple[float, float] = WIND) -> torch.Tensor:
    """One Gaussian cell in the middle, carried by ``wind``: (1, N_IN, 1, size, size)."""
    axis = torch.arange(size, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    frames = []
    for t in range(N_IN):
        cy, cx = 40.0 + wind[1] * t, 30.0 + wind[0] * t
        frames.append(20.0 * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 5.0**2)))
    return torch.stack(frames).reshape(1, N_IN, 1, size, size)


def centroid(field: torch.Tensor) -> torch.Tensor:
    """(x, y) centre of mass of a (H, W) field (NaN as 0)."""
    f = torch.nan_to_num(field)
    axis = torch.arange(f.shape[-1], dtype=f.dtype)
    return torch.stack([(f.sum(0) * axis).sum(), (f.sum(1) * axis).sum()]) / f.sum()


def test_a_perturbation_adds_its_motion_to_the_trajectories():
    # No flow, a perturbation of 1 px/step along x: the field moves 1 px a step.
    field = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    field[0, 0, 10:14, 8:12] = 5.0
    flow = torch.zeros(1, 2, 8, 8, dtype=torch.float64)
    push = torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, 8, 8)
    out = semi_lagrangian(field, flow, 4, perturbation=lambda k: push, trajectory_scale=1)
    for k in range(4):
        expected = torch.roll(field[0, 0], k + 1, dims=1)
        torch.testing.assert_close(out[0, k, 0, :, 6:], expected[:, 6:])
    # a perturbation cancelling the flow gives persistence
    wind = torch.tensor(WIND, dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, 8, 8)
    still = semi_lagrangian(field, wind, 3, perturbation=lambda k: -wind, trajectory_scale=1)
    torch.testing.assert_close(still[0, -1, 0], field[0, 0])


def test_a_member_moves_along_its_perturbed_motion_as_far_as_the_steps_model_says(model):
    from xnowcast.models.motion_perturbation import BPS_PARALLEL

    inputs = blob_sequence()
    geometry = {"grid_spacing_km": 1.0, "time_step_minutes": 5.0}
    zero = model.perturbed(inputs, STEPS, torch.zeros(1, 2), **geometry)
    torch.testing.assert_close(zero, model(inputs, STEPS), equal_nan=True)

    along = model.perturbed(inputs, STEPS, torch.tensor([[2.0, 0.0]]), **geometry)
    a, b, c = BPS_PARALLEL
    # km/h along the motion, 5 min a step on 1 km pixels: pixels per step
    expected = 2.0 * sum(a * (5.0 * k) ** b + c for k in range(1, STEPS + 1)) * 5.0 / 60.0
    direction = torch.tensor(WIND, dtype=torch.float64) / torch.tensor(WIND).norm()
    shift = centroid(along[0, -1, 0]) - centroid(zero[0, -1, 0])
    assert abs(float(shift @ direction) - expected) < 0.15 * expected, (shift, expected)
    assert abs(float(shift[0] * direction[1] - shift[1] * direction[0])) < 0.5  # none across

    # the same perturbation in km/h is half as many pixels on a 2 km grid
    coarse = model.perturbed(
        inputs, STEPS, torch.tensor([[2.0, 0.0]]), grid_spacing_km=2.0, time_step_minutes=5.0
    )
    half = centroid(coarse[0, -1, 0]) - centroid(zero[0, -1, 0])
    assert abs(float(half @ direction) - expected / 2) < 0.15 * expected / 2

    across = model.perturbed(inputs, STEPS, torch.tensor([[0.0, 1.0]]), **geometry)
    side = centroid(across[0, -1, 0]) - centroid(zero[0, -1, 0])
    assert abs(float(side @ direction)) < 0.5 and float(side.norm()) > 1.0
