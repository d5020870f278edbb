"""The media-mix math shared by training and serving: transforms, features, base, prediction from a spec."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from training.core import response


def make_spec(controls: bool = True) -> dict:
    """A small hand-written monthly MMM spec: two channels, Fourier order 1, one control."""
    periods = [f"2024-{m:02d}" for m in range(1, 13)] + [f"2025-{m:02d}" for m in range(1, 13)]
    return {
        "format": "adroi-model/2", "algorithm": "mmm", "channels": ["tv", "search"], "grain": "month",
        "window": ["2024-01", "2025-12"], "periods": periods,
        "trend_origin": date(2024, 1, 1).toordinal(), "fourier_order": 1,
        "base_terms": response.base_terms(1, ["price"] if controls else []),
        "base_coefficients": np.array([1000.0, 50.0, 100.0, -80.0] + ([-300.0] if controls else [])),
        "decay": np.array([0.5, 0.0]), "half_saturation": np.array([200.0, 100.0]),
        "shape": np.array([1.0, 2.0]), "coefficient": np.array([400.0, 300.0]),
        "controls": ["price"] if controls else [],
        "control_by_period": {p: np.array([1.0 + 0.01 * i]) for i, p in enumerate(periods)} if controls else {},
        "control_mean": np.array([1.115]) if controls else np.zeros(0),
        "max_spend_seen": np.array([9000.0, 6000.0]), "period_days": 30.4,
    }


def test_adstock_matches_hand_computed_values_and_keeps_a_constant_spend():
    assert response.adstock(np.array([1.0, 0.0, 0.0, 2.0]), 0.5) == pytest.approx([0.5, 0.25, 0.125, 1.0625])
    assert response.adstock(np.array([3.0, 4.0]), 0.0) == pytest.approx([3.0, 4.0])
    steady = response.adstock(np.full(400, 7.0), 0.9)
    assert steady[-1] == pytest.approx(7.0, rel=1e-12)


def test_adstock_of_columns_uses_one_decay_per_column():
    x = np.array([[1.0, 1.0], [0.0, 0.0]])

    out = response.adstock(x, np.array([0.5, 0.8]))

    assert out[:, 0] == pytest.approx([0.5, 0.25])
    assert out[:, 1] == pytest.approx([0.2, 0.16])


@pytest.mark.parametrize("days", [1, 63, 64, 65, 1000])
def test_adstock_in_blocks_equals_the_day_by_day_recurrence(days):
    rng = np.random.default_rng(days)
    x = rng.uniform(0.0, 100.0, (days, 3, 2))
    decay = np.array([[0.0, 0.3], [0.9, 0.97], [0.5, 0.05]])
    expected, state = np.empty_like(x), np.zeros((3, 2))
    for t in range(days):
        state = decay * state + (1.0 - decay) * x[t]
        expected[t] = state

    assert response.adstock(x, decay) == pytest.approx(expected, rel=1e-12, abs=1e-9)
    assert response.adstock(x[:, 1, 0], 0.9) == pytest.approx(expected[:, 1, 0], rel=1e-12, abs=1e-9)


def test_hill_is_half_at_half_saturation_and_its_derivative_matches_finite_differences():
    assert response.hill(np.array([0.0, 10.0, 20.0]), 10.0, 2.0) == pytest.approx([0.0, 0.5, 0.8])
    assert response.hill(np.array([30.0]), 10.0, 1.0) == pytest.approx([0.75])
    a = np.array([0.0, 3.0, 10.0, 25.0])
    for shape in (1.0, 1.7, 2.0):
        eps = 1e-6
        numeric = (response.hill(a + eps, 10.0, shape) - response.hill(np.maximum(a - eps, 0), 10.0, shape)) / (
            (a + eps) - np.maximum(a - eps, 0))
        assert response.hill_derivative(a, 10.0, shape)[1:] == pytest.approx(numeric[1:], rel=1e-5)
    assert response.hill_derivative(np.array([0.0]), 10.0, 1.0) == pytest.approx([0.1])
    assert response.hill_derivative(np.array([0.0]), 10.0, 2.0) == pytest.approx([0.0])
    assert response.hill_derivative(np.array([0.0]), 10.0, 0.5) == pytest.approx([np.inf])


def test_period_sum_drops_warm_up_days_and_carryover_crosses_the_period_edge():
    spend = np.array([8.0, 0.0, 0.0, 0.0, 0.0])  # all spend on a warm-up day
    day_period = np.array([-1, 0, 0, 1, 1])

    features = response.media_features(spend[:, None], day_period, 2, np.array([0.5]), np.array([1e9]),
                                       np.array([1.0]))

    # hill ≈ a/K for a ≪ K: adstock 4, 2, 1, 0.5, 0.25 → periods (2+1), (0.5+0.25)
    assert features[:, 0] * 1e9 == pytest.approx([3.0, 0.75], rel=1e-6)
    assert response.period_sum(np.arange(5.0), day_period, 2) == pytest.approx([3.0, 7.0])


def test_base_design_scales_level_and_trend_by_days_and_controls_by_days():
    start = date(2025, 2, 1).toordinal()
    ordinals = np.arange(start, start + 28 + 31)  # February (28 days), March (31)
    day_period = np.repeat([0, 1], [28, 31])

    design = response.base_design(ordinals, day_period, 2, start, 1, np.array([[2.0], [3.0]]))

    assert design[:, 0] == pytest.approx([28.0, 31.0])
    assert design[0, 1] == pytest.approx(sum(range(28)) / 365.25)
    assert design[:, -1] == pytest.approx([56.0, 93.0])
    assert response.base_terms(1, ["price"]) == ["level", "trend", "sin1", "cos1", "control:price"]
    assert design.shape == (2, 5)


def test_decomposition_sums_to_the_fitted_revenue():
    spec = make_spec()
    start = date(2023, 12, 1).toordinal()
    ordinals = np.arange(start, date(2024, 3, 31).toordinal() + 1)
    day_period = np.array([-1 if o < date(2024, 1, 1).toordinal() else date.fromordinal(o).month - 1
                           for o in ordinals])
    spend = np.random.default_rng(0).uniform(0, 400, size=(len(ordinals), 2))
    controls = np.array([[1.0], [1.1], [0.9]])

    parts = response.decompose(spec, spend, ordinals, day_period, 3, controls)

    assert parts["base"] + parts["contributions"].sum(axis=1) == pytest.approx(parts["fitted"])
    assert (parts["contributions"] > 0).all()
    assert response.predict_periods(spec, spend, ordinals, day_period, 3, controls) == pytest.approx(parts["fitted"])


def test_steady_state_revenue_is_what_a_long_constant_spend_brings_per_period():
    spec = make_spec()
    days = 30
    per_period = 4500.0
    ordinals = np.arange(1, 40 * days + 1)
    day_period = np.repeat(np.arange(40), days)

    parts = response.decompose(spec, np.full((len(ordinals), 2), per_period / days), ordinals, day_period, 40,
                               np.ones((40, 1)))

    for i, channel in enumerate(spec["channels"]):
        steady = response.steady_state_revenue(spec, channel, per_period, days)
        assert parts["contributions"][-1, i] == pytest.approx(steady, rel=1e-9)
        assert steady == pytest.approx(spec["coefficient"][i] * days * response.hill(
            per_period / days, spec["half_saturation"][i], spec["shape"][i]))


def test_steady_state_marginal_is_the_derivative_of_the_curve():
    spec = make_spec()
    spend = np.array([500.0, 3000.0, 9000.0])

    for channel in spec["channels"]:
        step = 1e-3
        numeric = (response.steady_state_revenue(spec, channel, spend + step)
                   - response.steady_state_revenue(spec, channel, spend - step)) / (2 * step)
        assert response.steady_state_marginal(spec, channel, spend) == pytest.approx(numeric, rel=1e-6)


def test_predict_from_period_spend_holds_spend_steady_and_takes_controls_from_a_year_earlier():
    spec = make_spec()

    out = response.predict_from_period_spend(spec, {"tv": 3100.0, "search": 0.0}, "2026-03")

    assert out["days"] == 31.0 and out["period"] == "2026-03"
    assert out["controls_from"] == "2025-03"
    assert out["controls"]["price"] == pytest.approx(spec["control_by_period"]["2025-03"][0])
    assert out["contributions"]["tv"] == pytest.approx(400.0 * 31 * response.hill(100.0, 200.0, 1.0))
    assert out["contributions"]["search"] == 0.0
    assert out["prediction"] == pytest.approx(out["base"] + out["media_contribution"])
    assert out["media_roi"] == pytest.approx(out["media_contribution"] / 3100.0)
    assert out["warnings"] == []
    start, end = date(2026, 3, 1).toordinal(), date(2026, 3, 31).toordinal()
    design = response.base_design(np.arange(start, end + 1), np.zeros(31, dtype=int), 1, spec["trend_origin"], 1,
                                  np.array([[out["controls"]["price"]]]))
    assert out["base"] == pytest.approx(float(design[0] @ spec["base_coefficients"]))


def test_predict_from_period_spend_defaults_to_the_next_period_and_warns_outside_the_training_range():
    spec = make_spec()

    out = response.predict_from_period_spend(spec, np.array([20000.0, 100.0]))

    assert out["period"] == "2026-01"
    assert out["controls_from"] == "2025-01"
    assert len(out["warnings"]) == 1 and out["warnings"][0].startswith("tv: spend 20,000.00")


def test_controls_fall_back_to_the_training_mean_when_no_earlier_period_was_seen():
    spec = make_spec()

    out = response.predict_from_period_spend(spec, {"tv": 1.0}, "2023-06")

    assert out["controls_from"] == "training mean"
    assert out["controls"]["price"] == pytest.approx(1.115)


def test_weekly_periods_have_seven_days_and_the_next_week_crosses_the_year():
    assert response.period_bounds("2026-W01", "week") == (date(2025, 12, 29), date(2026, 1, 4))
    assert response.period_after("2026-W53", "week") == "2027-W01"
    assert response.period_after("2025-12", "month") == "2026-01"
    with pytest.raises(ValueError, match="period='2026-13'"):
        response.period_bounds("2026-13", "month")


def mixture_spec() -> dict:
    """`make_spec` with a second Hill component for tv (search keeps one, padded with a zero coefficient)."""
    spec = make_spec()
    spec.update({"decay": np.array([[0.5, 0.9], [0.0, 0.0]]), "half_saturation": np.array([[200.0, 50.0],
                                                                                            [100.0, 1.0]]),
                 "shape": np.array([[1.0, 1.5], [2.0, 1.0]]), "coefficient": np.array([[400.0, 150.0],
                                                                                        [300.0, 0.0]]),
                 "curve_form": "hill_mixture"})
    return spec


def component_spec(spec: dict, m: int) -> dict:
    """The single-Hill spec of mixture component `m` of every channel."""
    single = dict(spec)
    for key in ("decay", "half_saturation", "shape", "coefficient"):
        single[key] = np.asarray(spec[key])[:, m].copy()
    return single


def test_a_hill_mixture_predicts_the_sum_of_its_components_and_serves_the_same_way():
    spec = mixture_spec()
    rng = np.random.default_rng(1)
    spend = rng.uniform(0, 400, size=(760, 2))
    ordinals = np.arange(date(2023, 12, 2).toordinal(), date(2023, 12, 2).toordinal() + 760)
    day_period = np.array([-1] * 30 + [i // 30 for i in range(730)])[:760]
    n_periods = int(day_period.max()) + 1
    controls = np.ones((n_periods, 1))
    parts = [response.decompose(component_spec(spec, m), spend, ordinals, day_period, n_periods, controls)
             for m in range(2)]

    mixed = response.decompose(spec, spend, ordinals, day_period, n_periods, controls)

    assert mixed["contributions"] == pytest.approx(parts[0]["contributions"] + parts[1]["contributions"])
    assert mixed["base"] == pytest.approx(parts[0]["base"])
    grid = np.linspace(0.0, 9000.0, 7)
    for channel in spec["channels"]:
        assert response.steady_state_revenue(spec, channel, grid) == pytest.approx(
            sum(response.steady_state_revenue(component_spec(spec, m), channel, grid) for m in range(2)))
        assert response.steady_state_marginal(spec, channel, grid) == pytest.approx(
            sum(response.steady_state_marginal(component_spec(spec, m), channel, grid) for m in range(2)))
    out = response.predict_from_period_spend(spec, {"tv": 3000.0, "search": 1000.0}, "2026-03")
    assert out["contributions"]["tv"] == pytest.approx(float(response.steady_state_revenue(spec, "tv", 3000.0, 31)))


def test_the_steady_state_form_is_the_hill_mixture_to_float_precision():
    spec = mixture_spec()
    days = 31.0
    spend = np.vstack([np.zeros(2), np.random.default_rng(3).uniform(0, 2e4, size=(8, 2)), [1e-3, 5e6]])

    form = response.spec_steady_state(spec, days)
    got = form.revenue(spend)

    beta, half, shape = (np.asarray(spec[k]) for k in ("coefficient", "half_saturation", "shape"))
    expected = np.zeros_like(spend)
    for c in range(2):
        for m in range(2):
            if beta[c, m]:
                expected[:, c] += beta[c, m] * days * response.hill(spend[:, c] / days, half[c, m], shape[c, m])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    assert (got[0] == 0).all()
    for c, channel in enumerate(spec["channels"]):
        np.testing.assert_allclose(response.steady_state_revenue(spec, channel, spend[:, c], days), got[:, c],
                                   rtol=1e-12, atol=0)
        np.testing.assert_allclose(form.channel(c).curve(spend[:, c]), got[:, c], rtol=1e-12, atol=0)  # planner's
    assert form.revenue(spend[3]).tolist() == got[3].tolist()  # one instance as a (C,) vector


def test_one_instance_in_plain_floats_is_the_array_form():
    """`revenue_of_one` (Python floats) against `revenue` (numpy), one Hill curve per channel and mixtures."""
    single = make_spec()
    idle = mixture_spec()
    idle["coefficient"] = np.array([[400.0, 150.0], [0.0, 0.0]])  # search has no live component
    rng = np.random.default_rng(4)
    rows = np.vstack([np.zeros(2), rng.uniform(0, 2e4, size=(20, 2)), [1e-3, 5e6]])
    for spec in (single, mixture_spec(), idle):
        form = response.spec_steady_state(spec, 31.0)
        for row in rows:
            alone = form.revenue_of_one(tuple(row.tolist()))
            assert all(type(value) is float for value in alone)
            np.testing.assert_allclose(alone, form.revenue(row), rtol=1e-12, atol=0)
            np.testing.assert_allclose(alone, form.revenue(rows)[rows.tolist().index(row.tolist())], rtol=1e-12,
                                       atol=0)
    assert response.spec_steady_state(idle, 31.0).revenue_of_one((5000.0, 7000.0))[1] == 0.0


def test_one_instance_beyond_float_range_overflows_where_the_array_form_does():
    spec = mixture_spec()
    spec["shape"] = np.array([[1.0, 4.0], [2.0, 1.0]])
    form = response.spec_steady_state(spec, 31.0)
    with np.errstate(over="ignore", invalid="ignore"):
        beyond = form.revenue(np.array([1e300, 1e300]))
    assert not np.isfinite(beyond[0])

    with pytest.raises(OverflowError):
        form.revenue_of_one((1e300, 1e300))
    np.testing.assert_allclose(form.revenue_of_one(form.safe_spend), form.revenue(np.array(form.safe_spend)),
                               rtol=1e-12, atol=0)


def test_a_form_python_floats_cannot_evaluate_like_numpy_is_evaluated_with_numpy():
    spec = make_spec()
    spec["half_saturation"] = np.array([-200.0, 100.0])  # no fitted model has one; numpy's nan, not a complex
    spec["shape"] = np.array([1.5, 2.0])
    form = response.spec_steady_state(spec, 31.0)
    with np.errstate(invalid="ignore"):
        expected = form.revenue(np.array([3000.0, 1000.0]))
        alone = form.revenue_of_one((3000.0, 1000.0))

    assert np.isnan(alone[0])
    np.testing.assert_array_equal(alone, expected)  # numpy's answer (nan, and what the matrix product makes of it)


def test_the_steady_state_form_stays_finite_and_quiet_up_to_its_safe_spend():
    spec = mixture_spec()
    spec["shape"] = np.array([[1.0, 4.0], [2.0, 1.0]])  # (S/(D·K))^4 overflows for tv long before S does
    form = response.spec_steady_state(spec, 31.0)
    safe = np.array(form.safe_spend)

    with np.errstate(over="raise", invalid="raise", divide="raise"):
        at_limit = form.revenue(safe)
    with np.errstate(over="ignore", invalid="ignore"):
        beyond = form.revenue(np.array([1e300, 1e300]))

    assert np.isfinite(at_limit).all()
    assert 1e60 < safe[0] < 1e100 and 1e140 < safe[1] < 1e160  # 10^(300/s) · D·K, the largest shape counts
    assert not np.isfinite(beyond[0])  # beyond the safe spend the caller sees the overflow


@pytest.mark.parametrize(("change", "message"), [
    ({"algorithm": "ols"}, "format/algorithm"),
    ({"coefficient": np.ones((2, 3))}, r"shapes \[\(2, 1\), \(2, 1\), \(2, 1\), \(2, 3\)\] differ"),
    ({"decay": np.zeros(3)}, r"spec.decay: shape \(3,\); expected \(2,\) or \(2, components\)"),
    ({"decay": None}, None),
])
def test_check_spec_names_what_is_wrong(change, message):
    spec = make_spec()
    if message is None:
        del spec["decay"]
        message = r"missing keys \['decay'\]"
    else:
        spec.update(change)

    with pytest.raises(ValueError, match=message):
        response.check_spec(spec)


def test_the_module_imports_with_numpy_only():
    code = ("import sys; import training.core.response; "
            "print(sorted(m for m in ('pandas', 'sklearn', 'scipy', 'matplotlib', 'pyarrow') if m in sys.modules))")

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])

    assert out.stdout.strip() == "[]"


def test_controls_given_with_the_request_override_the_defaults_and_unknown_ones_are_named():
    spec = make_spec()

    out = response.predict_from_period_spend(spec, {"tv": 1.0}, "2026-03", controls={"price": 2.0})

    assert out["controls"] == {"price": 2.0}
    with pytest.raises(ValueError, match=r"controls.weather=1: expected one of the model's controls \['price'\]"):
        response.predict_from_period_spend(spec, {"tv": 1.0}, "2026-03", controls={"weather": 1})
