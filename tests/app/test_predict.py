"""Tests of app/predict.py: one dot product equal to scikit-learn's predict, and named input errors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from app.model import build_served_model, load_served_model
from app.predict import VECTORISE_FROM, PredictionInputError, predict, spend_rows
from training.core import response
from training.core.registry import ModelRegistry
from training.core.store import open_store


@pytest.mark.parametrize("instances", [1, VECTORISE_FROM - 1, VECTORISE_FROM, 500])  # plain floats and numpy
def test_predictions_equal_scikit_learn_predict(served, instances):
    model, estimator = served
    spend = pd.DataFrame(np.random.default_rng(instances).uniform(0, 2e6, (instances, 4)),
                         columns=list(model.channels))
    rows = [{k.upper(): v for k, v in row.items()} for row in spend.to_dict("records")]

    result = predict(model, spend_rows(model, rows, "instances"))

    np.testing.assert_allclose(result.revenue, estimator.predict(spend), rtol=1e-9)
    assert result.model_version == model.version


def test_contributions_roi_and_input_order(served):
    model, _ = served
    rows = [{"video": 10.0, "email": 0.0, "social_media": 0.0, "search_engine": 0.0},
            {"email": 0.0, "search_engine": 0.0, "social_media": 0.0, "video": 0.0}]

    result = predict(model, spend_rows(model, rows, "instances"))

    assert result.contributions[0] == pytest.approx({"email": 0.0, "search_engine": 0.0, "social_media": 0.0,
                                                     "video": 9.0})
    assert result.revenue[0] == pytest.approx(1234.5 + 9.0)
    assert result.roi == [pytest.approx((1234.5 + 9.0) / 10.0), None]  # ROI is undefined without spend
    assert result.revenue[1] == pytest.approx(1234.5)


def test_old_client_shape_is_accepted_case_insensitively_and_index_ignored(served):
    model, _ = served
    row = {"SEARCH_ENGINE": 522807, "SOCIAL_MEDIA": 518987, "VIDEO": 519625, "EMAIL": 520742, "index": 0}

    result = predict(model, spend_rows(model, [row]))

    expected = 1234.5 + 522807 * 2.4 + 518987 * 1.7 + 519625 * 0.9 + 520742 * 3.1
    assert result.revenue == [pytest.approx(expected, rel=1e-9)]


@pytest.mark.parametrize(("row", "code", "field"), [
    ({"email": 1, "search_engine": 1, "social_media": 1, "video": 1, "tv": 1}, "unknown_channel", "instances[1].tv"),
    ({"email": 1, "search_engine": 1, "social_media": 1}, "missing_channel", "instances[1].video"),
    ({"email": 1, "EMAIL": 1, "search_engine": 1, "social_media": 1, "video": 1}, "duplicate_channel",
     "instances[1].EMAIL"),
])
def test_bad_instance_names_its_position_and_key(served, row, code, field):
    model, _ = served
    good = {"email": 1, "search_engine": 1, "social_media": 1, "video": 1}

    with pytest.raises(PredictionInputError) as info:
        spend_rows(model, [good, row], "instances")

    assert (info.value.code, info.value.field) == (code, field)
    assert "email" in info.value.message  # says what was expected


def test_single_instance_error_has_no_position(served):
    model, _ = served

    with pytest.raises(PredictionInputError) as info:
        spend_rows(model, [{"email": 1}], "spend")

    assert info.value.field == "spend.search_engine"


@pytest.mark.parametrize(("instances", "field"), [(1, None), (VECTORISE_FROM + 1, f"instances[{VECTORISE_FROM}]")])
def test_overflowing_spend_is_an_input_error(served, instances, field):
    model, _ = served
    rows = [{"email": 1.0, "search_engine": 1.0, "social_media": 0, "video": 0}] * (instances - 1)
    rows.append({"email": 1e308, "search_engine": 1e308, "social_media": 0, "video": 0})

    with pytest.raises(PredictionInputError, match="overflow") as info:
        predict(model, spend_rows(model, rows, "instances" if instances > 1 else ""))

    assert (info.value.code, info.value.field) == ("out_of_range", field)


def test_single_channel_model(tmp_path, publish_model):
    published = publish_model(str(tmp_path / "store"), {"video": 2.0}, intercept=10.0)
    registry = ModelRegistry(open_store(published.store_uri))
    model = load_served_model(registry, registry.latest())

    result = predict(model, spend_rows(model, [{"VIDEO": 5.0, "index": 3}]))

    assert result.revenue == [pytest.approx(20.0)]
    assert result.contributions == [{"video": pytest.approx(10.0)}]


# ---- the media-mix model -----------------------------------------------------------------------------------

@pytest.fixture
def served_mmm(mmm_store):
    """The media-mix model of `mmm_store` as the API serves it, and its spec."""
    registry = ModelRegistry(open_store(mmm_store.store_uri))
    return load_served_model(registry, registry.latest()), mmm_store.estimator.spec


@pytest.mark.parametrize("instances", [1, VECTORISE_FROM + 3])
@pytest.mark.parametrize("period", [None, "2026-12", "2027-02"])
def test_mmm_prediction_is_the_shared_math_for_spend_held_through_the_period(served_mmm, instances, period):
    model, spec = served_mmm
    spend = np.random.default_rng(instances).uniform(0, 2e5, (instances, 4))
    rows = [dict(zip(model.channels, row.tolist(), strict=True)) for row in spend]

    result = predict(model, spend_rows(model, rows, "instances"), period)

    for i, row in enumerate(spend):
        expected = response.predict_from_period_spend(spec, row, period)
        assert result.revenue[i] == pytest.approx(expected["prediction"], rel=1e-12)
        assert result.contributions[i] == pytest.approx(expected["contributions"], rel=1e-12)
        assert result.media_contribution[i] == pytest.approx(expected["media_contribution"], rel=1e-12)
        assert result.media_roi[i] == pytest.approx(expected["media_roi"], rel=1e-12)
        assert result.roi[i] == pytest.approx(expected["prediction"] / row.sum(), rel=1e-12)
    assert result.period == (period or "2026-11")


def test_mmm_spend_beyond_training_is_warned_per_instance(served_mmm):
    model, spec = served_mmm
    seen = dict(zip(model.channels, spec["max_spend_seen"], strict=True))
    inside = {c: v / 2 for c, v in seen.items()}
    beyond = {**inside, "social": seen["social"] * 3}

    result = predict(model, spend_rows(model, [inside, beyond, inside], "instances"))

    assert result.warnings[0] == result.warnings[2] == []
    assert len(result.warnings[1]) == 1 and result.warnings[1][0].startswith("social: spend ")
    assert "extrapolated" in result.warnings[1][0]
    assert result.out_of_range == ["social"]


def test_mmm_zero_spend_has_no_roi_and_predicts_the_base(served_mmm):
    model, _ = served_mmm

    result = predict(model, spend_rows(model, [dict.fromkeys(model.channels, 0.0)]))

    assert result.media_contribution == [0.0] and result.media_roi == [None] and result.roi == [None]
    assert result.revenue[0] == pytest.approx(model.facts.period("2026-11").base)


def test_linear_model_answers_media_contribution_and_roi_without_warnings(served):
    model, _ = served
    row = {"email": 10.0, "search_engine": 0.0, "social_media": 0.0, "video": 10.0}

    result = predict(model, spend_rows(model, [row]))

    assert result.media_contribution == [pytest.approx(31.0 + 9.0)]
    assert result.media_roi == [pytest.approx(40.0 / 20.0)]
    assert result.warnings == [[]] and result.period is None  # a version without blocks: no grain, no max seen


@pytest.mark.parametrize("instances", [1, VECTORISE_FROM + 1])  # plain check of the safe spend, and numpy
def test_mmm_spend_beyond_float_range_is_reported_and_numpy_never_warns(served_mmm, instances):
    model, _ = served_mmm
    inside = dict.fromkeys(model.channels, 1000.0)
    huge = dict.fromkeys(model.channels, 1e308)
    period = model.facts.period(model.facts.default_period)
    assert period.in_range_is_safe  # so `inside` takes the path without np.errstate
    with np.errstate(over="ignore", invalid="ignore"):
        overflows = not np.isfinite(period.media.revenue(np.full(len(model.channels), 1e308)).sum())

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning from numpy would fail the test
        assert predict(model, spend_rows(model, [inside] * instances, "instances")).revenue[0] > 0
        rows = spend_rows(model, [inside] * (instances - 1) + [huge], "instances")
        if overflows:
            with pytest.raises(PredictionInputError, match="overflow") as info:
                predict(model, rows)
            assert info.value.code == "out_of_range"
        else:
            assert np.isfinite(predict(model, rows).revenue).all()


@pytest.fixture
def served_mixture(served_mmm):
    """`served_mmm` rewritten as a two-component Hill mixture, the form versions before one Hill curve held."""
    model, spec = served_mmm
    mixture = dict(spec, curve_form="hill_mixture")
    for key, second in (("decay", 0.5), ("half_saturation", 3.0), ("shape", 1.0), ("coefficient", 0.5)):
        first = np.asarray(spec[key], float).reshape(-1)
        scaled = first * second if key in ("half_saturation", "coefficient") else np.full_like(first, second)
        mixture[key] = np.column_stack([first / 2 if key == "coefficient" else first, scaled])
    return build_served_model(model.pointer, model.manifest, mixture), mixture


def test_an_old_hill_mixture_is_served_from_its_components(served_mixture):
    model, spec = served_mixture
    row = dict(zip(model.channels, np.random.default_rng(6).uniform(0, 2e5, len(model.channels)).tolist(),
                   strict=True))

    result = predict(model, spend_rows(model, [row]))

    expected = response.predict_from_period_spend(spec, np.array(list(row.values())))
    assert result.revenue[0] == pytest.approx(expected["prediction"], rel=1e-12)
    assert result.contributions[0] == pytest.approx(expected["contributions"], rel=1e-12)


@pytest.mark.parametrize("which", ["served", "served_mmm", "served_mixture"])
def test_a_batch_answers_what_its_instances_answer_one_by_one(request, which):
    model = request.getfixturevalue(which)[0]
    rng = np.random.default_rng(5)
    rows = [dict.fromkeys(model.channels, 0.0)] + [
        dict(zip(model.channels, rng.uniform(0, 2e5, len(model.channels)).tolist(), strict=True))
        for _ in range(VECTORISE_FROM)]

    batch = predict(model, spend_rows(model, rows, "instances"))
    alone = [predict(model, spend_rows(model, [row])) for row in rows]

    assert batch.roi[0] is alone[0].roi[0] is None and batch.media_roi[0] is alone[0].media_roi[0] is None
    for field in ("revenue", "roi", "media_contribution", "media_roi"):
        expected = [getattr(one, field)[0] for one in alone]
        assert getattr(batch, field)[1:] == pytest.approx(expected[1:], rel=1e-12)  # [0]: no spend, no ROI
        assert len(getattr(batch, field)) == len(rows)
    for got, one in zip(batch.contributions, alone, strict=True):
        assert got == pytest.approx(one.contributions[0], rel=1e-12)
    assert batch.warnings == [one.warnings[0] for one in alone]
