"""The budget allocation engine, checked against an independent scipy solver on S-shaped and concave curves."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.allocate_reference import (
    exponential_curve,
    hill_curve,
    random_curve_set,
    reference_optimum,
    total_revenue,
)
from training.core.allocate import ResponseCurve, allocate
from training.core.errors import AllocationError

GAP = 1e-3  # the engine is within 0.1% of the best optimum scipy finds


def assert_feasible(result, problem_budget, bounds):
    spend = np.array(list(result.allocation.values()))
    assert math.isclose(spend.sum(), problem_budget, rel_tol=1e-12)
    for name, value in result.allocation.items():
        lo, hi = (bounds or {}).get(name, [0.0, None])
        assert value >= (lo or 0.0)
        assert hi is None or value <= hi


QUALITY_CASES = [
    (kind, channels, bounds, seed)
    for seed, (kind, channels, bounds) in enumerate(
        [
            ("s_shaped", 2, "none"),
            ("s_shaped", 2, "tight"),
            ("s_shaped", 3, "none"),
            ("s_shaped", 3, "loose"),
            ("s_shaped", 3, "tight"),
            ("s_shaped", 6, "none"),
            ("s_shaped", 6, "tight"),
            ("s_shaped", 10, "loose"),
            ("concave", 2, "loose"),
            ("concave", 3, "none"),
            ("concave", 3, "tight"),
            ("concave", 6, "loose"),
            ("concave", 10, "none"),
            ("mixed", 3, "loose"),
            ("mixed", 6, "tight"),
            ("mixed", 10, "none"),
        ]
    )
]


@pytest.mark.parametrize(("kind", "channels", "bounds", "seed"), QUALITY_CASES)
def test_allocation_within_a_tenth_of_a_percent_of_scipy(kind, channels, bounds, seed):
    rng = np.random.default_rng(1000 + seed)
    problem = random_curve_set(rng, kind, channels, bounds)
    reference, _ = reference_optimum(problem, rng, starts=6 if channels > 3 else 12)

    result = allocate(
        problem.curves, problem.budget, bounds=problem.bounds or None, current_spend=problem.current
    )

    assert_feasible(result, problem.budget, problem.bounds)
    achieved = total_revenue(problem, result.allocation)
    assert math.isclose(result.media_revenue, achieved, rel_tol=1e-12)
    assert achieved >= reference * (1 - GAP), (achieved, reference)


def test_tight_bounds_move_off_the_starting_spend():
    # Current mix 50/50; one channel returns three times more: it goes to its maximum, not the start.
    curves = {"tv": exponential_curve(300_000, 50_000), "radio": exponential_curve(100_000, 50_000)}
    bounds = {"tv": [40_000, 60_000], "radio": [40_000, 60_000]}

    result = allocate(curves, 100_000, bounds=bounds, current_spend={"tv": 5_000, "radio": 5_000})

    assert result.allocation == {"radio": 40_000.0, "tv": 60_000.0}
    assert result.channels["tv"].bound == "max"
    assert result.channels["radio"].bound == "min"
    assert result.current_allocation == {"radio": 50_000.0, "tv": 50_000.0}
    assert result.lift_absolute > 0


def test_flat_gradient_at_the_equal_split_is_not_the_answer():
    # Four identical steep S-curves: at an equal split every marginal return is ~0, and equal; the best use of
    # the budget is to bring as few channels as possible past their threshold.
    curves = {name: hill_curve(1_000_000, 60_000, 6.0) for name in ["a", "b", "c", "d"]}
    budget = 100_000.0
    equal = sum(c.revenue(np.array([budget / 4]))[0] for c in curves.values())

    result = allocate(curves, budget)

    spends = sorted(result.allocation.values())
    assert spends[:3] == [0.0, 0.0, 0.0]
    assert spends[3] == budget
    assert result.media_revenue > 10 * equal


def test_channel_order_does_not_change_the_answer_and_names_stay_with_their_curves():
    rng = np.random.default_rng(7)
    problem = random_curve_set(rng, "mixed", 5, "loose")
    names = list(problem.curves)
    reversed_curves = {name: problem.curves[name] for name in reversed(names)}

    first = allocate(problem.curves, problem.budget, bounds=problem.bounds or None)
    second = allocate(reversed_curves, problem.budget, bounds=problem.bounds or None)

    assert first.allocation == second.allocation
    for name, spend in first.allocation.items():
        assert math.isclose(first.channels[name].revenue, problem.curves[name].revenue(np.array([spend]))[0])


def test_matches_closed_form_on_concave_curves():
    # Exponential curves beta * (1 - exp(-s / kappa)): equal marginal returns give s_c in closed form.
    params = {
        "search": (400_000.0, 30_000.0),
        "social": (250_000.0, 20_000.0),
        "video": (150_000.0, 40_000.0),
    }
    curves = {name: exponential_curve(beta, kappa) for name, (beta, kappa) in params.items()}
    budget = 90_000.0
    # s_c = kappa_c * (ln(beta_c / kappa_c) - ln(lambda)), sum s_c = budget
    kappas = np.array([k for _, k in params.values()])
    logs = np.array([math.log(b / k) for b, k in params.values()])
    log_lambda = (kappas @ logs - budget) / kappas.sum()
    expected = kappas * (logs - log_lambda)
    assert (expected > 0).all()

    result = allocate(curves, budget)

    for name, spend in zip(params, expected, strict=True):
        assert math.isclose(result.allocation[name], spend, rel_tol=1e-6)
    mrois = [result.channels[name].mroi for name in params]
    assert max(mrois) - min(mrois) < 1e-6 * max(mrois)


def test_extrapolation_beyond_the_largest_spend_seen_is_a_warning():
    curves = {"tv": exponential_curve(300_000, 50_000), "radio": exponential_curve(100_000, 50_000)}

    result = allocate(curves, 100_000, max_spend_seen={"tv": 40_000, "radio": 60_000})
    within = allocate(curves, 100_000, max_spend_seen={"tv": 100_000, "radio": 100_000})

    assert result.allocation["tv"] > 40_000
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("tv: recommended spend")
    assert "largest spend in training (40,000)" in result.warnings[0]
    assert result.channels["tv"].max_spend_seen == 40_000
    assert within.warnings == []


@pytest.mark.parametrize(("seen", "beyond"), [(0.995, "0.5% above the largest"), (0.25, "4.0x the largest")])
def test_the_extrapolation_warning_says_by_how_much(seen, beyond):
    curves = {"tv": lambda s: 3.0 * s, "radio": lambda s: 1.0 * s}

    result = allocate(curves, 100_000, bounds={"tv": [None, 50_000]}, max_spend_seen={"tv": 50_000 * seen, "radio": 1e9})

    assert result.allocation["tv"] == pytest.approx(50_000)
    assert f"tv: recommended spend 50,000 per period is {beyond} spend in training" in result.warnings[0]


def test_linear_model_goes_to_a_corner_and_says_so():
    coefficients = {"email": 1.5, "search": 2.5, "video": 0.8}
    curves = {name: (lambda s, b=b: b * s) for name, b in coefficients.items()}
    bounds = {"search": [0, 70_000], "video": [10_000, None]}

    result = allocate(curves, 100_000, bounds=bounds, algorithm="ols")

    assert result.allocation == {"email": 20_000.0, "search": 70_000.0, "video": 10_000.0}
    assert [c.bound for c in result.channels.values()] == ["none", "max", "min"]
    assert any("linear (ols)" in w and "corner" in w for w in result.warnings)
    assert math.isclose(result.channels["search"].mroi, 2.5, rel_tol=1e-6)


def test_target_mroi_spends_until_the_marginal_return_reaches_the_target():
    params = {"search": (400_000.0, 30_000.0), "video": (150_000.0, 40_000.0)}
    curves = {name: exponential_curve(beta, kappa) for name, (beta, kappa) in params.items()}
    target = 1.5

    result = allocate(curves, 1_000_000, scenario="target_mroi", target_mroi=target)

    for name, (beta, kappa) in params.items():
        closed_form = kappa * math.log(beta / (kappa * target))
        assert math.isclose(result.allocation[name], closed_form, rel_tol=1e-6)
        assert math.isclose(result.channels[name].mroi, target, rel_tol=1e-5)
    assert math.isclose(result.unspent, 1_000_000 - sum(result.allocation.values()), rel_tol=1e-9)


def test_target_mroi_with_a_binding_budget_is_the_max_revenue_split():
    rng = np.random.default_rng(11)
    problem = random_curve_set(rng, "s_shaped", 4, "none")
    budget = problem.budget / 4

    capped = allocate(problem.curves, budget, scenario="target_mroi", target_mroi=0.01)
    plain = allocate(problem.curves, budget)

    assert math.isclose(sum(capped.allocation.values()), budget, rel_tol=1e-9)
    assert math.isclose(capped.media_revenue, plain.media_revenue, rel_tol=1e-6)


def test_s_shaped_channel_below_its_threshold_stays_at_its_minimum():
    # A channel whose S-curve only pays off far beyond the budget gets nothing beyond its minimum.
    curves = {"good": hill_curve(500_000, 20_000, 2.0), "late": hill_curve(500_000, 900_000, 3.0)}

    result = allocate(curves, 50_000, bounds={"late": [5_000, None]})

    assert result.allocation["late"] == 5_000.0
    assert result.channels["late"].bound == "min"
    assert result.allocation["good"] == 45_000.0


def test_current_mix_is_scaled_to_the_budget_and_lift_is_measured_on_it():
    curves = {"tv": hill_curve(200_000, 30_000, 2.0), "radio": exponential_curve(100_000, 20_000)}

    result = allocate(curves, 80_000, current_spend={"tv": 3_000, "radio": 1_000})

    assert result.current_allocation == {"radio": 20_000.0, "tv": 60_000.0}
    current_revenue = sum(curves[n].revenue(np.array([s]))[0] for n, s in result.current_allocation.items())
    assert math.isclose(result.current_media_revenue, current_revenue)
    assert math.isclose(result.lift_absolute, result.media_revenue - current_revenue)
    assert math.isclose(result.lift_relative, result.lift_absolute / current_revenue)
    assert result.lift_absolute >= 0


def test_deterministic_and_json_ready():
    rng = np.random.default_rng(5)
    problem = random_curve_set(rng, "mixed", 8, "loose")

    first = allocate(
        problem.curves, problem.budget, bounds=problem.bounds or None, current_spend=problem.current
    )
    second = allocate(
        problem.curves, problem.budget, bounds=problem.bounds or None, current_spend=problem.current
    )

    assert first.to_dict() == second.to_dict()
    decoded = json.loads(json.dumps(first.to_dict()))
    assert set(decoded) >= {
        "allocation",
        "media_revenue",
        "channels",
        "current_allocation",
        "lift_absolute",
        "warnings",
    }
    assert set(decoded["channels"]["ch00"]) >= {"spend", "mroi", "bound"}


def test_accepts_plain_callables_without_derivative():
    curves = {"a": lambda s: 1000 * np.sqrt(s), "b": lambda s: 2000 * np.sqrt(s)}

    result = allocate(curves, 50_000)

    # sqrt curves: spend proportional to the squared coefficients, 1 : 4
    assert math.isclose(result.allocation["a"], 10_000, rel_tol=1e-6)
    assert math.isclose(result.channels["a"].mroi, result.channels["b"].mroi, rel_tol=1e-5)


CURVES = {"tv": exponential_curve(300_000, 50_000), "radio": exponential_curve(100_000, 50_000)}


@pytest.mark.parametrize(
    ("kwargs", "field", "expected_part"),
    [
        ({"budget": 0}, "budget", "positive finite"),
        ({"budget": -5}, "budget", "positive finite"),
        ({"budget": float("nan")}, "budget", "positive finite"),
        ({"budget": float("inf")}, "budget", "positive finite"),
        ({"budget": "1000"}, "budget", "positive finite"),
        ({"budget": True}, "budget", "positive finite"),
        ({"budget": 1000, "bounds": {"print": [0, 10]}}, "bounds.print", "radio, tv"),
        ({"budget": 1000, "bounds": {"tv": [500, 100]}}, "bounds.tv", "min <= max"),
        ({"budget": 1000, "bounds": {"tv": [-1, 100]}}, "bounds.tv.min", ">= 0"),
        ({"budget": 1000, "bounds": {"tv": [1]}}, "bounds.tv", "[min, max]"),
        (
            {"budget": 1000, "bounds": {"tv": [600, None], "radio": [500, None]}},
            "bounds",
            "sum of minimums (1,100.00)",
        ),
        (
            {"budget": 1000, "bounds": {"tv": [0, 300], "radio": [0, 500]}},
            "bounds",
            "sum of maximums (800.00)",
        ),
        ({"budget": 1000, "scenario": "max_profit"}, "scenario", "max_revenue, target_mroi"),
        ({"budget": 1000, "scenario": "target_mroi"}, "target_mroi", "positive finite"),
        ({"budget": 1000, "scenario": "target_mroi", "target_mroi": 0}, "target_mroi", "positive finite"),
        (
            {"budget": 1000, "scenario": "target_mroi", "target_mroi": float("inf")},
            "target_mroi",
            "positive finite",
        ),
        ({"budget": 1000, "target_mroi": 1.2}, "target_mroi", "scenario is target_mroi"),
        ({"budget": 1000, "current_spend": {"print": 5}}, "current_spend.print", "radio, tv"),
    ],
)
def test_rejections_name_the_field_the_value_and_the_expectation(kwargs, field, expected_part):
    budget = kwargs.pop("budget")

    with pytest.raises(AllocationError) as caught:
        allocate(CURVES, budget, **kwargs)

    assert caught.value.field == field
    assert expected_part in caught.value.expected
    assert isinstance(caught.value, ValueError)


def test_sum_of_maximums_below_budget_is_fine_when_the_budget_is_a_cap():
    result = allocate(
        CURVES, 1000, bounds={"tv": [0, 300], "radio": [0, 500]}, scenario="target_mroi", target_mroi=0.5
    )

    assert sum(result.allocation.values()) <= 800 + 1e-9


def test_a_curve_returning_nan_is_rejected_naming_the_channel():
    curves = {"tv": ResponseCurve(revenue=lambda s: np.where(s > 500, np.nan, s)), "radio": lambda s: s}

    with pytest.raises(AllocationError) as caught:
        allocate(curves, 1000)

    assert caught.value.field == "curves.tv"


def test_imports_with_numpy_only():
    code = (
        "import sys; import training.core.allocate; "
        "heavy = {'scipy', 'pandas', 'sklearn', 'matplotlib'} & {m.split('.')[0] for m in sys.modules}; "
        "print(sorted(heavy))"
    )

    repo_root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo_root
    )

    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("budget", "bounds", "expected"),
    [
        (1000, None, None),  # one channel takes what the other's S-curve cannot use
        (1000, {"tv": [400, 400]}, {"tv": 400.0, "radio": 600.0}),  # a fixed channel
        (1000, {"tv": [0, 0]}, {"tv": 0.0, "radio": 1000.0}),  # a channel switched off
        (
            1000,
            {"tv": [300, None], "radio": [700, None]},
            {"tv": 300.0, "radio": 700.0},
        ),  # minimums == budget
        (1000, {"tv": [0, 250], "radio": [0, 750]}, {"tv": 250.0, "radio": 750.0}),  # maximums == budget
    ],
)
def test_edge_bounds_are_honoured_exactly(budget, bounds, expected):
    curves = {"tv": hill_curve(2_000, 400, 2.5), "radio": exponential_curve(1_500, 300)}

    result = allocate(curves, budget, bounds=bounds)

    assert_feasible(result, budget, bounds)
    if expected is not None:
        assert result.allocation == expected


def test_single_channel_gets_the_whole_budget():
    result = allocate({"tv": hill_curve(2_000, 400, 2.5)}, 1234.5)

    assert result.allocation == {"tv": 1234.5}


def test_infinite_slope_at_zero_is_reported_as_no_mroi():
    # A square-root curve is infinitely steep at zero; a channel held there has no finite mROI.
    def slope(spend):
        with np.errstate(divide="ignore"):
            return 50.0 / np.sqrt(spend)

    curves = {
        "tv": ResponseCurve(revenue=lambda s: 100.0 * np.sqrt(s), derivative=slope),
        "radio": exponential_curve(1_500, 300),
    }

    result = allocate(curves, 1000, bounds={"tv": [0, 0]})

    assert result.channels["tv"].mroi is None
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["channels"]["tv"]["mroi"] is None


def test_the_budget_is_not_reported_as_a_max_bound():
    # One good channel takes the whole budget: no bound holds it, the budget does.
    curves = {"tv": exponential_curve(300_000, 50_000), "radio": lambda s: 0.0 * s}

    result = allocate(curves, 10_000, bounds={"radio": [0, 5_000]})

    assert result.allocation == {"radio": 0.0, "tv": 10_000.0}
    assert result.channels["tv"].bound == "none"
    assert result.channels["tv"].upper is None
    assert result.channels["radio"].bound == "min"
