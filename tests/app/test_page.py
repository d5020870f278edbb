"""Tests of app/page.py (the page at `/`): rendered HTML through the Flask client, then in headless Chromium.

The browser tests load the page from a real server (the app with its real `POST /allocate`, serving a
media-mix model fitted on simulated data), compare its ROI table with `/model`, plan a budget with the form
(static/page/planner.js), check the allocation shown against `/allocate`'s answer and keep screenshots.
"""

from __future__ import annotations

import json
import os
import re

import pytest
import requests

from tests.conftest import PAGE_CHANNELS, REPO_ROOT, media_mix_blocks, open_registry

DOCS_SCREENSHOT = REPO_ROOT / "docs" / "page.png"
VALIDATION_REPORT = {"passed": True, "rows": 98_640, "run_date": "2026-11-15", "results": [
    {"rule": "null_values", "status": "pass", "action": "fail", "count": 0, "message": "null_values: ok"},
    {"rule": "duplicate_rows", "status": "pass", "action": "fail", "count": 0, "message": "duplicate_rows: ok"},
    {"rule": "extreme_values", "status": "warn", "action": "warn", "count": 2, "examples": ["tv 2025-11-28",
                                                                                               "tv 2025-11-29"],
     "message": "extreme_values: 2 daily spends above 5.0 × their channel's median"}]}


def _page_app(make_app, store_uri: str):
    return make_app({"MODEL_STORE": store_uri, "MODEL_POLL_SECONDS": 3600})


def _republish_with_validation(store_uri: str, report: dict) -> str:
    """Publish the promoted model again as a new version that carries `report` as validation.json; promote it."""
    registry = open_registry(store_uri)
    latest = registry.latest().version
    manifest, _ = registry.load(latest)
    model_bytes = registry.store.read(f"models/{latest}/model.joblib")
    body = {k: v for k, v in manifest.items() if k not in ("format", "version", "sha256", "size", "files")}
    version = "29990101T000000Z-" + manifest["sha256"][:8]
    registry.publish(version, model_bytes, body, {"validation.json": json.dumps(report).encode()})
    registry.promote(version)
    return version


# ---- the HTML the server renders ----------------------------------------------------------------------

def test_page_shows_every_block_of_a_media_mix_model(page_model, make_app):
    client = _page_app(make_app, page_model.store_uri).test_client()

    response = client.get("/")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert page_model.version in html
    assert re.findall(r'<tr data-channel="([a-z_]+)">\s*<th scope="row"><span class="swatch"', html) == PAGE_CHANNELS
    assert html.count('class="chart chart-curve"') == len(PAGE_CHANNELS)
    assert 'class="chart chart-decomposition"' in html
    assert html.count('class="layer"') == len(PAGE_CHANNELS) + 1  # base + one area per channel
    assert "need a model trained" not in html
    assert "<dd>0.912</dd>" in html and "<dd>$61,250</dd>" in html  # holdout R² and RMSE
    assert "<strong>Quality gate: promoted.</strong>" in html and "20261101T040000Z-3c1d9e0a" in html
    assert "RMSE 61250 within 5% of the champion&#39;s 63010" in html


def test_roi_rows_follow_the_models_channel_order_not_the_blocks(tmp_path, publish_model, make_app):
    blocks = media_mix_blocks(PAGE_CHANNELS)
    blocks["roi"]["channels"] = dict(reversed(blocks["roi"]["channels"].items()))
    coefficients = {c: 1.0 + i for i, c in enumerate(PAGE_CHANNELS)}
    published = publish_model(str(tmp_path / "store"), coefficients, **blocks)

    html = _page_app(make_app, published.store_uri).test_client().get("/").get_data(as_text=True)

    rows = re.findall(r'<tr data-channel="([a-z_]+)">\s*<th scope="row"><span', html)
    assert rows == PAGE_CHANNELS
    tv = blocks["roi"]["channels"]["tv"]
    assert f'data-field="roi" data-value="{tv["roi"]}"' in html


def test_old_linear_model_shows_its_marginal_roi_and_says_the_rest_needs_mmm(local_client):
    html = local_client.get("/").get_data(as_text=True)
    described = local_client.get("/model").json

    shown = dict(re.findall(r'<tr data-channel="([a-z_]+)"><th scope="row">[^<]*</th>'
                            r'<td data-field="mroi" data-value="([^"]+)"', html))
    assert {c: float(v) for c, v in shown.items()} == described["marginal_roi"]
    assert "need a model trained with the\n    <code>mmm</code> algorithm" in html
    assert "roi, response_curves, decomposition blocks" in html
    assert 'id="curves"' not in html and 'id="decomposition"' not in html
    assert 'id="planner-form"' in html  # /allocate decides what a linear model can plan


def test_a_malformed_block_is_named_on_the_page_instead_of_failing_it(tmp_path, publish_model, make_app):
    blocks = media_mix_blocks(PAGE_CHANNELS[:3])
    blocks["roi"]["channels"]["tv"]["roi"] = "high"
    blocks["response_curves"]["channels"]["email"] = blocks["response_curves"]["channels"].pop("search_engine")
    published = publish_model(str(tmp_path / "store"), {c: 1.0 for c in PAGE_CHANNELS[:3]}, **blocks)

    response = _page_app(make_app, published.store_uri).test_client().get("/")

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "roi.channels.tv.roi is &#39;high&#39;: expected a finite number" in html
    assert "response_curves.channels is [&#39;email&#39;]: expected channels of the model" in html
    assert 'class="chart chart-decomposition"' in html  # the valid block still renders


def test_channel_names_are_escaped(tmp_path, publish_model, make_app):
    blocks = media_mix_blocks(["tv"])
    published = publish_model(str(tmp_path / "store"), {"tv": 1.0, "<b>x</b>": 2.0}, **blocks)

    html = _page_app(make_app, published.store_uri).test_client().get("/").get_data(as_text=True)

    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_validation_report_is_read_once_per_version_and_its_findings_shown(page_model, make_app, monkeypatch):
    app = _page_app(make_app, page_model.store_uri)
    follower = app.extensions["adroi_follower"]
    reads: list[str] = []
    store = follower.registry.store
    original_read = store.read
    monkeypatch.setattr(store, "read", lambda key: reads.append(key) or original_read(key))
    client = app.test_client()
    first = client.get("/").get_data(as_text=True)
    assert client.get("/").get_data(as_text=True) == first
    assert reads == []  # published without validation.json (the manifest lists its files): nothing to read
    assert "published without a validation report" in first

    version = _republish_with_validation(page_model.store_uri, VALIDATION_REPORT)
    assert follower.poll_once()
    reads.clear()
    pages = [client.get("/").get_data(as_text=True) for _ in range(3)]

    assert [k for k in reads if k.endswith("validation.json")] == [f"models/{version}/validation.json"]
    assert version in pages[0] and pages[0] == pages[2]
    assert "2 of 3 checks clean" in pages[0]
    assert "<strong>extreme_values</strong> (warn, 2 found)" in pages[0]


def test_a_validation_report_the_store_cannot_give_is_read_again_later(page_model, make_app, monkeypatch):
    from app import page as page_module
    from training.core.errors import StorageUnavailable

    _republish_with_validation(page_model.store_uri, VALIDATION_REPORT)
    app = _page_app(make_app, page_model.store_uri)
    store = app.extensions["adroi_follower"].registry.store
    original_read = store.read

    def unavailable(key):
        raise StorageUnavailable(f"{key}: 503 from the bucket")

    monkeypatch.setattr(store, "read", unavailable)
    client = app.test_client()
    assert "The validation report could not be read" in client.get("/").get_data(as_text=True)
    monkeypatch.setattr(store, "read", original_read)
    assert "could not be read" in client.get("/").get_data(as_text=True)  # cached for a while, not per request

    later = page_module.time.monotonic() + page_module.VALIDATION_RETRY_SECONDS + 1
    monkeypatch.setattr(page_module.time, "monotonic", lambda: later)
    assert "2 of 3 checks clean" in client.get("/").get_data(as_text=True)


def test_page_answers_304_to_its_etag_and_changes_with_the_version(page_model, make_app):
    app = _page_app(make_app, page_model.store_uri)
    client = app.test_client()
    etag = client.get("/").headers["ETag"]

    assert client.get("/", headers={"If-None-Match": etag}).status_code == 304
    _republish_with_validation(page_model.store_uri, {"passed": True, "results": []})
    app.extensions["adroi_follower"].poll_once()
    assert client.get("/", headers={"If-None-Match": etag}).status_code == 200


def test_without_a_model_the_page_says_so_with_503(tmp_path, make_app):
    response = _page_app(make_app, str(tmp_path / "empty")).test_client().get("/")

    assert response.status_code == 503
    assert response.mimetype == "text/html"
    assert "No model is served yet" in response.get_data(as_text=True)


def test_static_files_are_served(local_client):
    assert "planner" in local_client.get("/static/page/planner.js").get_data(as_text=True)
    assert local_client.get("/static/page/page.css").status_code == 200


# ---- in a browser ------------------------------------------------------------------------------------------

@pytest.fixture
def page_server(page_model, make_app, serve_app):
    """The base URL of the app (its real `POST /allocate`) serving a ten-channel media-mix model."""
    _republish_with_validation(page_model.store_uri, VALIDATION_REPORT)
    return serve_app(_page_app(make_app, page_model.store_uri))


OVERLAPPING_LABELS_JS = """() => {
  const found = [];
  for (const svg of document.querySelectorAll("svg.chart")) {
    const boxes = [...svg.querySelectorAll("text")].map((t) => [t.textContent, t.getBoundingClientRect()]);
    boxes.forEach(([a, p], i) => boxes.slice(i + 1).forEach(([b, q]) => {
      if (p.left < q.right && q.left < p.right && p.top < q.bottom && q.top < p.bottom) found.push(`${a} / ${b}`);
    }));
  }
  return found;
}"""


def _cell_values(page, table: str, field: str) -> dict[str, float | None]:
    values = {row.get_attribute("data-channel"): row.locator(f'[data-field="{field}"]').get_attribute("data-value")
              for row in page.locator(f"{table} tbody tr").all()}
    return {channel: None if value == "null" else float(value) for channel, value in values.items()}


@pytest.mark.slow
def test_page_in_chromium_matches_the_model_and_plans_a_budget(browser, page_server, page_model, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(page_server + "/")

    described = requests.get(page_server + "/model", timeout=10).json()
    expected = described["roi"]
    assert described["algorithm"] == "mmm"
    assert page.get_by_test_id("version").inner_text() == described["version"]
    assert _cell_values(page, "#roi-table", "roi") == {c: v["roi"] for c, v in expected["channels"].items()}
    assert _cell_values(page, "#roi-table", "mroi") == {c: v["mroi"] for c, v in expected["channels"].items()}
    assert list(_cell_values(page, "#roi-table", "roi")) == described["channels"]

    budget = 900000
    free = requests.post(page_server + "/allocate", json={"budget": budget}, timeout=10).json()["allocation"]
    capped = max((c for c in free if c != "tv"), key=free.get)  # cap the channel the plan gives most but tv
    cap = round(free[capped] / 2)
    page.get_by_label("Budget per month").fill(str(budget))
    page.get_by_text("Bounds per channel (optional)").click()
    page.locator('input[data-channel="tv"][data-bound="min"]').fill("150000")
    page.locator(f'input[data-channel="{capped}"][data-bound="max"]').fill(str(cap))
    with page.expect_response("**/allocate") as answered:
        page.get_by_role("button", name="Recommend a split").click()
    answer = answered.value.json()
    assert answered.value.request.post_data_json == {"budget": budget, "bounds": {"tv": [150000, budget],
                                                                                  capped: [0, cap]}}
    # The page shows the real route's answer: the same as asking /allocate directly.
    assert answer == requests.post(page_server + "/allocate", json=answered.value.request.post_data_json,
                                   timeout=10).json()
    page.locator("#planner-result").wait_for(state="visible")

    assert _cell_values(page, "#allocation-table", "recommended") == answer["allocation"]
    assert _cell_values(page, "#allocation-table", "current") == answer["current_mix"]["allocation"]
    assert _cell_values(page, "#allocation-table", "mroi") == {c: v["mroi"] for c, v in answer["channels"].items()}
    assert list(_cell_values(page, "#allocation-table", "recommended")) == described["channels"]
    assert page.locator(f'#allocation-table tr[data-channel="{capped}"] [data-field="binding"]').inner_text() == \
        "at maximum"
    assert answer["allocation"]["tv"] >= 150000
    lift = page.locator('#planner-summary [data-field="lift"]').inner_text()
    assert lift == f"+${answer['lift']['revenue']:,.0f} +{answer['lift']['relative'] * 100:.1f}%"
    assert page.locator("#planner-warnings li").all_inner_texts() == answer["warnings"]
    assert page.locator("svg.chart-curve .marker-recommended:not([hidden])").count() == len(described["channels"])
    assert page.evaluate(OVERLAPPING_LABELS_JS) == []
    assert errors == []

    screenshot = tmp_path / "page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"\nscreenshot of the page (laptop, after planning): {screenshot}")
    if os.environ.get("ADROI_UPDATE_SCREENSHOT"):  # the README's copy, in 128 colours (a third of the bytes)
        from PIL import Image

        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        Image.open(screenshot).convert("RGB").quantize(128, dither=Image.Dither.NONE).save(DOCS_SCREENSHOT,
                                                                                             optimize=True)
    page.close()


@pytest.mark.slow
def test_page_fits_a_phone_screen(browser, page_server, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page.goto(page_server + "/")

    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert page.evaluate(OVERLAPPING_LABELS_JS) == []
    font_px = page.evaluate("parseFloat(getComputedStyle(document.querySelector('#roi-table td')).fontSize)")
    screenshot = tmp_path / "page-phone.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"\nscreenshot of the page (phone): {screenshot}")
    page.close()
    assert overflow <= 0  # wide charts and tables scroll inside their card, the page itself does not
    assert font_px >= 14


@pytest.mark.slow
def test_planner_marks_what_is_wrong_before_and_after_asking(browser, page_server):
    page = browser.new_page()
    page.goto(page_server + "/")
    requests_sent: list[str] = []
    page.on("request", lambda r: requests_sent.append(r.url) if r.url.endswith("/allocate") else None)

    page.get_by_label("Budget per month").fill("")
    page.get_by_role("button", name="Recommend a split").click()
    assert page.get_by_label("Budget per month").get_attribute("aria-invalid") == "true"
    assert page.locator("#budget-error").inner_text() == "Enter a budget above 0."
    assert requests_sent == []

    page.get_by_label("Budget per month").fill("10000")
    page.get_by_text("Bounds per channel (optional)").click()
    page.locator('input[data-channel="radio"][data-bound="min"]').fill("6000")
    page.locator('input[data-channel="tv"][data-bound="min"]').fill("6000")
    with page.expect_response("**/allocate") as answered:
        page.get_by_role("button", name="Recommend a split").click()
    assert answered.value.status == 400
    status = page.get_by_role("status")
    status.filter(has_text="above the budget").wait_for()
    assert status.inner_text() == answered.value.json()["error"]["message"]
    assert page.locator("#planner-result").is_hidden()
    page.close()


@pytest.mark.slow
def test_report_reads_without_javascript(browser, page_server):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(page_server + "/")

    assert page.locator("#roi-table tbody tr").count() == len(PAGE_CHANNELS)
    assert page.locator("svg.chart-curve").count() == len(PAGE_CHANNELS)
    assert page.get_by_role("button", name="Recommend a split").is_disabled()
    assert "needs JavaScript" in page.locator("#planner").inner_text()
    context.close()
