"""Tests of training/core/planner.py: the request → answer computation of /allocate, the CLI and /predict."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import fitted_mmm
from training.core import response
from training.core.artifact import linear_spec
from training.core.errors import AllocationError
from training.core.planner import media_contributions, media_contributions_of_one, model_facts, plan_budget


@pytest.fixture(scope="module")
def mmm():
    """A fitted monthly media-mix model (4 channels) and its planning facts."""
    fitted = fitted_mmm()
    manifest = {"roi": fitted.roi, "response_curves": fitted.response_curves}
    return fitted, model_facts("v-mmm", fitted.spec, manifest)


@pytest.fixture(scope="module")
def weekly():
    fitted = fitted_mmm(grain="week", years=3, replicates=0)
    return fitted, model_facts("v-week", fitted.spec, {"response_curves": fitted.response_curves})


def _linear_facts(with_blocks: bool = True):
    spec = linear_spec("ols", ["email", "search", "tv"], 1000.0, np.array([3.0, 2.0, 1.0]))
    blocks = {}
    if with_blocks:
        blocks = {"roi": {"window": ["2024-01", "2026-10"]},
                  "response_curves": {"grain": "month", "channels": {
                      c: {"current_spend": s, "max_spend_seen": 2 * s}
                      for c, s in (("email", 10_000.0), ("search", 30_000.0), ("tv", 60_000.0))}}}
    return model_facts("v-linear", spec, blocks)


def test_defaults_come_from_the_spec_and_the_response_curves_block(mmm):
    fitted, facts = mmm

    assert facts.algorithm == "mmm" and facts.grain == "month"
    assert facts.default_period == response.period_after(fitted.spec["window"][1], "month") == "2026-11"
    assert facts.current_spend == {c: v["current_spend"] for c, v in fitted.response_curves["channels"].items()}
    assert facts.max_spend_seen == dict(zip(fitted.spec["channels"], fitted.spec["max_spend_seen"], strict=True))


def test_the_allocations_revenue_is_what_predict_says_for_that_spend(mmm):
    fitted, facts = mmm

    answer = plan_budget(facts, 400_000, period="2026-12")

    predicted = response.predict_from_period_spend(fitted.spec, answer["allocation"], "2026-12")
    assert answer["period"] == "2026-12"
    assert answer["predicted_revenue"] == pytest.approx(predicted["prediction"], rel=1e-12)
    assert answer["base_revenue"] == pytest.approx(predicted["base"], rel=1e-12)
    assert answer["media_revenue"] == pytest.approx(predicted["media_contribution"], rel=1e-12)
    assert sum(answer["allocation"].values()) == pytest.approx(400_000, rel=1e-12)
    assert list(answer["allocation"]) == list(fitted.spec["channels"])  # the model's order, not sorted


def test_the_allocation_is_optimal_free_channels_share_one_marginal_return(mmm):
    fitted, facts = mmm

    answer = plan_budget(facts, 600_000, bounds={"tv": [50_000, 150_000]})

    days = response.period_bounds(answer["period"], "month")
    days = (days[1] - days[0]).days + 1
    marginal = {c: float(response.steady_state_marginal(fitted.spec, c, s, days))
                for c, s in answer["allocation"].items()}
    free = [c for c, plan in answer["channels"].items() if plan["binding"] is None]
    assert free, answer
    level = marginal[free[0]]
    assert all(marginal[c] == pytest.approx(level, rel=1e-3) for c in free)
    assert all(marginal[c] <= level * (1 + 1e-3) for c, p in answer["channels"].items() if p["binding"] == "min")
    assert all(marginal[c] >= level * (1 - 1e-3) for c, p in answer["channels"].items() if p["binding"] == "max")
    assert 50_000 <= answer["allocation"]["tv"] <= 150_000
    assert {c: p["mroi"] for c, p in answer["channels"].items()} == pytest.approx(marginal, rel=1e-6)


def test_current_mix_is_the_last_12_periods_split_scaled_to_the_budget(mmm):
    fitted, facts = mmm

    answer = plan_budget(facts, 300_000)

    current = {c: v["current_spend"] for c, v in fitted.response_curves["channels"].items()}
    scale = 300_000 / sum(current.values())
    assert answer["current_mix"]["allocation"] == pytest.approx({c: v * scale for c, v in current.items()})
    at_mix = response.predict_from_period_spend(fitted.spec, answer["current_mix"]["allocation"], answer["period"])
    assert answer["current_mix"]["predicted_revenue"] == pytest.approx(at_mix["prediction"], rel=1e-12)
    assert answer["lift"]["revenue"] == pytest.approx(answer["predicted_revenue"] - at_mix["prediction"])
    assert answer["lift"]["revenue"] >= 0  # the optimum is never worse than the current mix
    assert answer["lift"]["relative"] == pytest.approx(answer["lift"]["revenue"] / at_mix["prediction"])


def test_spend_beyond_training_is_named_and_warned(mmm):
    fitted, facts = mmm
    biggest = max(fitted.spec["max_spend_seen"])

    answer = plan_budget(facts, 10 * biggest)

    assert answer["out_of_range"]
    assert all(answer["allocation"][c] > facts.max_spend_seen[c] for c in answer["out_of_range"])
    assert sorted(w.split(":")[0] for w in answer["warnings"]) == sorted(answer["out_of_range"])


def test_same_request_same_answer_and_bounds_are_case_insensitive(mmm):
    _, facts = mmm

    first = plan_budget(facts, 250_000, bounds={"TV": [None, 40_000]})
    second = plan_budget(facts, 250_000, bounds={"tv": [None, 40_000]})

    assert first == second
    assert first["allocation"]["tv"] <= 40_000


def test_target_mroi_stops_where_one_more_unit_returns_less(mmm):
    _, facts = mmm

    answer = plan_budget(facts, 5_000_000, scenario="target_mroi", target_mroi=2.5)

    assert answer["unspent"] > 0
    assert all(p["mroi"] == pytest.approx(2.5, rel=1e-2) for p in answer["channels"].values() if p["spend"] > 0)


@pytest.mark.parametrize(("kwargs", "field", "expected"), [
    ({"budget": 0}, "budget", "positive finite"),
    ({"budget": float("inf")}, "budget", "positive finite"),
    ({"budget": 1e5, "bounds": {"radio": [0, 1]}}, "bounds.radio", "a channel of the model"),
    ({"budget": 1e5, "bounds": {"tv": [5, 1]}}, "bounds.tv", "min <= max"),
    ({"budget": 1e5, "bounds": {"tv": [1, 2], "TV": [1, 2]}}, "bounds.TV", "each channel once"),
    ({"budget": 1e5, "bounds": {"tv": [9e4, None], "search": [2e4, None]}}, "bounds", "sum of minimums"),
    ({"budget": 1e5, "bounds": {c: [0, 10] for c in ("tv", "search", "social", "display")}}, "bounds",
     "sum of maximums"),
    ({"budget": 1e5, "bounds": [1, 2]}, "bounds", "an object"),
    ({"budget": 1e5, "scenario": "target_mroi"}, "target_mroi", "positive finite"),
    ({"budget": 1e5, "period": "2026-13"}, "period", "YYYY-MM"),
    ({"budget": 1e5, "period": "2026-W50"}, "period", "YYYY-MM"),
    ({"budget": 1e5, "period": 202612}, "period", "YYYY-MM"),
    ({"budget": 1e5, "period": "0001-01"}, "period", "years 1900 to 2199"),
    ({"budget": 1e300}, "budget", "response curves can evaluate"),
])
def test_bad_requests_name_the_field(mmm, kwargs, field, expected):
    _, facts = mmm
    budget = kwargs.pop("budget")

    with pytest.raises(AllocationError) as raised:
        plan_budget(facts, budget, **kwargs)

    assert raised.value.field == field
    assert expected in raised.value.expected


def test_weekly_model_plans_iso_weeks_of_seven_days(weekly):
    fitted, facts = weekly

    answer = plan_budget(facts, 80_000, period="2026-W50")

    assert facts.default_period == response.period_after(fitted.spec["window"][1], "week")
    assert facts.default_period.startswith("2026-W")
    assert answer["period"] == "2026-W50" and answer["grain"] == "week"
    assert facts.period("2026-W50").days == 7
    predicted = response.predict_from_period_spend(fitted.spec, answer["allocation"], "2026-W50")
    assert answer["predicted_revenue"] == pytest.approx(predicted["prediction"], rel=1e-12)
    with pytest.raises(AllocationError, match="YYYY-Www"):
        plan_budget(facts, 80_000, period="2026-12")
    with pytest.raises(AllocationError):
        plan_budget(facts, 80_000, period="2025-W53")  # 2025 has 52 ISO weeks


def test_period_facts_are_computed_once_per_period(mmm):
    _, facts = mmm

    assert facts.period("2027-01") is facts.period("2027-01")
    assert facts.period("2027-01").days == 31
    assert facts.period("2027-02").days == 28


def test_media_contributions_are_the_models_steady_state_response(mmm):
    fitted, facts = mmm
    spend = np.random.default_rng(1).uniform(0, 3e5, (5, 4))

    parts = media_contributions(facts, facts.period("2027-03"), spend)

    for row, got in zip(spend, parts, strict=True):
        expected = response.predict_from_period_spend(fitted.spec, row, "2027-03")["contributions"]
        assert got.tolist() == pytest.approx(list(expected.values()), rel=1e-12)


@pytest.mark.parametrize("which", ["mmm", "linear"])
def test_one_instance_in_plain_floats_is_what_a_batch_answers(mmm, which):
    facts = mmm[1] if which == "mmm" else _linear_facts()
    period = facts.period(facts.default_period)
    spend = np.random.default_rng(2).uniform(0, 3e5, (5, len(facts.channels)))

    batch = media_contributions(facts, period, spend)

    for row, expected in zip(spend, batch, strict=True):
        alone = media_contributions_of_one(facts, period, tuple(row.tolist()))
        assert all(type(value) is float for value in alone)
        assert alone == pytest.approx(expected.tolist(), rel=1e-12)


def test_linear_model_plans_a_corner_says_so_and_its_base_is_the_intercept():
    facts = _linear_facts()

    answer = plan_budget(facts, 100_000, bounds={"email": [0, 30_000]})

    assert answer["allocation"] == pytest.approx({"email": 30_000, "search": 70_000, "tv": 0})
    assert answer["base_revenue"] == 1000.0
    assert answer["predicted_revenue"] == pytest.approx(1000 + 3 * 30_000 + 2 * 70_000)
    assert answer["period"] == "2026-11"  # from the roi window and grain the linear model's blocks carry
    assert any("linear (ols)" in w for w in answer["warnings"])
    assert answer["out_of_range"] == ["email", "search"]  # above twice their current spend: the test's max seen


def test_old_linear_model_without_blocks_plans_without_current_mix_or_period():
    facts = _linear_facts(with_blocks=False)

    answer = plan_budget(facts, 100_000)

    assert answer["current_mix"] is None and answer["lift"] is None and answer["period"] is None
    assert answer["allocation"]["email"] == pytest.approx(100_000)
    assert plan_budget(facts, 100_000, period="2026-W50")["period"] == "2026-W50"  # checked; no season to set
    with pytest.raises(AllocationError):
        plan_budget(facts, 100_000, period="December")
