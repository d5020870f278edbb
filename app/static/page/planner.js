// The budget planner of the adroi page: sends the form to POST /allocate and shows the answer.
// Hand-written, no framework. The report itself is server-rendered and reads without this file.
//
// Request:  {"budget": number, "bounds": {"<channel>": [min, max], ...}}  (bounds only for filled boxes;
//           an empty minimum is 0, an empty maximum the budget)
// Answer read: allocation {channel: spend}, predicted_revenue, media_revenue, current_mix {allocation,
//           predicted_revenue}, lift (number: revenue over the current mix; or {revenue, relative}),
//           per channel mroi and the binding bound (either `channels: {ch: {mroi, binding}}` or the maps
//           `mroi: {ch: x}` and `binding: {ch: "min"|"max"|null}`), warnings [string | {message}].
// Errors:   {"error": {"code", "message", "field"}} with field "budget" or "bounds.<channel>".
"use strict";

(function () {
  const form = document.getElementById("planner-form");
  if (!form) return;
  const fields = document.getElementById("planner-fields");
  const status = document.getElementById("planner-status");
  const result = document.getElementById("planner-result");
  const channels = JSON.parse(form.dataset.channels);
  const symbol = form.dataset.symbol || "";
  const budgetInput = document.getElementById("budget");
  fields.disabled = false;

  const BOUND_NAMES = { min: "at minimum", max: "at maximum", lower: "at minimum", upper: "at maximum" };

  function money(value) {
    if (typeof value !== "number" || !isFinite(value)) return "–";
    const text = Math.abs(value).toLocaleString("en-US", { maximumFractionDigits: 0 });
    return (value < 0 ? "−" : "") + symbol + text;
  }
  function signedMoney(value) {
    return (value > 0 ? "+" : "") + money(value);
  }
  function ratio(value) {
    return typeof value === "number" && isFinite(value) ? value.toFixed(2) : "–";
  }
  function percent(value) {
    return typeof value === "number" && isFinite(value) ? (value > 0 ? "+" : "") + (value * 100).toFixed(1) + "%" : "";
  }
  function parseAmount(input) {
    const text = input.value.trim();
    if (text === "") return null;
    const value = Number(text);
    return isFinite(value) ? value : NaN;
  }

  function clearErrors() {
    form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
    form.querySelectorAll(".field-error").forEach((el) => { el.hidden = true; el.textContent = ""; });
    status.textContent = "";
    status.classList.remove("error");
  }
  function fieldError(channel, message) {
    const input = channel ? form.querySelector(`input[data-channel="${CSS.escape(channel)}"]`) : budgetInput;
    const box = document.getElementById(channel ? `bound-${channel}-error` : "budget-error");
    if (channel) form.querySelector("details.bounds").open = true;
    form.querySelectorAll(channel ? `input[data-channel="${CSS.escape(channel)}"]` : "#budget")
      .forEach((el) => el.setAttribute("aria-invalid", "true"));
    if (box) { box.textContent = message; box.hidden = false; }
    if (input) input.focus();
  }
  function showError(message) {
    status.textContent = message;
    status.classList.add("error");
  }

  // Read the form; returns the request body or null after marking what is wrong.
  function readRequest() {
    const budget = parseAmount(budgetInput);
    if (budget === null || !(budget > 0)) {
      fieldError(null, "Enter a budget above 0.");
      return null;
    }
    const bounds = {};
    for (const { channel, label } of channels) {
      const low = parseAmount(form.querySelector(`input[data-channel="${CSS.escape(channel)}"][data-bound="min"]`));
      const high = parseAmount(form.querySelector(`input[data-channel="${CSS.escape(channel)}"][data-bound="max"]`));
      if (low === null && high === null) continue;
      if (Number.isNaN(low) || Number.isNaN(high) || (low !== null && low < 0) || (high !== null && high < 0)) {
        fieldError(channel, `Bounds of ${label} must be amounts of 0 or more.`);
        return null;
      }
      const pair = [low === null ? 0 : low, high === null ? budget : high];
      if (pair[0] > pair[1]) {
        fieldError(channel, `The minimum of ${label} is above its maximum.`);
        return null;
      }
      bounds[channel] = pair;
    }
    return Object.keys(bounds).length ? { budget, bounds } : { budget };
  }

  function perChannel(answer, channel) {
    const entry = (answer.channels && answer.channels[channel]) || {};
    const mroi = entry.mroi !== undefined ? entry.mroi : (answer.mroi || {})[channel];
    let binding = entry.binding !== undefined ? entry.binding : entry.bound;
    if (binding === undefined) binding = (answer.binding || answer.bounds_binding || {})[channel];
    return { mroi, binding: binding || null };
  }
  function liftOf(answer, currentRevenue) {
    const lift = answer.lift;
    if (typeof lift === "number") {
      return { revenue: lift, relative: currentRevenue ? lift / currentRevenue : null };
    }
    if (lift && typeof lift === "object") {
      const revenue = lift.revenue !== undefined ? lift.revenue : lift.absolute;
      const relative = lift.relative !== undefined ? lift.relative : lift.ratio;
      return { revenue, relative: relative !== undefined ? relative : (currentRevenue ? revenue / currentRevenue : null) };
    }
    return { revenue: null, relative: null };
  }

  function cell(tag, text, attributes) {
    const el = document.createElement(tag);
    el.textContent = text;
    for (const [name, value] of Object.entries(attributes || {})) el.setAttribute(name, value);
    return el;
  }

  function markCurves(allocation) {
    document.querySelectorAll("svg.chart-curve[data-channel]").forEach((svg) => {
      const channel = svg.dataset.channel;
      const spend = allocation[channel];
      const marker = svg.querySelector(".marker-recommended");
      const text = document.querySelector(`.recommended-text[data-channel="${CSS.escape(channel)}"]`);
      if (typeof spend !== "number" || !marker) return;
      const scale = JSON.parse(svg.dataset.scale);
      const [x0, x1, px0, px1] = scale.x;
      const [y0, y1, py0, py1] = scale.y;
      const clamped = Math.min(Math.max(spend, x0), x1);
      const x = px0 + (clamped - x0) / (x1 - x0) * (px1 - px0);
      const xs = scale.spend, ys = scale.revenue;
      let revenue = ys[ys.length - 1];
      for (let i = 1; i < xs.length; i++) {
        if (clamped <= xs[i]) {
          const w = xs[i] > xs[i - 1] ? (clamped - xs[i - 1]) / (xs[i] - xs[i - 1]) : 1;
          revenue = ys[i - 1] + w * (ys[i] - ys[i - 1]);
          break;
        }
      }
      const y = py0 + (revenue - y0) / (y1 - y0) * (py1 - py0);
      marker.querySelector("line").setAttribute("x1", x.toFixed(1));
      marker.querySelector("line").setAttribute("x2", x.toFixed(1));
      marker.querySelector("circle").setAttribute("cx", x.toFixed(1));
      marker.querySelector("circle").setAttribute("cy", y.toFixed(1));
      marker.hidden = false;
      marker.removeAttribute("hidden");
      if (text) text.textContent = ` · recommended ${money(spend)}` + (spend > x1 ? " (beyond this chart)" : "");
    });
  }

  function render(answer) {
    const current = (answer.current_mix && answer.current_mix.allocation) || {};
    const currentRevenue = answer.current_mix ? answer.current_mix.predicted_revenue : null;
    const lift = liftOf(answer, currentRevenue);
    const summary = document.getElementById("planner-summary");
    summary.querySelector('[data-field="predicted_revenue"]').textContent = money(answer.predicted_revenue);
    summary.querySelector('[data-field="current_revenue"]').textContent = money(currentRevenue);
    const liftCell = summary.querySelector('[data-field="lift"]');
    liftCell.textContent = lift.revenue === null ? "–" : `${signedMoney(lift.revenue)} ${percent(lift.relative)}`.trim();
    liftCell.className = lift.revenue > 0 ? "up" : (lift.revenue < 0 ? "down" : "");
    summary.querySelector('[data-field="media_revenue"]').textContent = money(answer.media_revenue);

    const body = document.querySelector("#allocation-table tbody");
    const foot = document.querySelector("#allocation-table tfoot");
    body.replaceChildren();
    foot.replaceChildren();
    let totalCurrent = 0, totalRecommended = 0;
    // Rows in the model's channel order, matched by name: never by the answer's key order.
    for (const { channel, label } of channels) {
      const spend = answer.allocation[channel];
      const before = current[channel];
      const { mroi, binding } = perChannel(answer, channel);
      totalRecommended += typeof spend === "number" ? spend : 0;
      totalCurrent += typeof before === "number" ? before : 0;
      const row = document.createElement("tr");
      row.dataset.channel = channel;
      row.append(
        cell("th", label, { scope: "row" }),
        cell("td", money(before), { "data-field": "current", "data-value": String(before) }),
        cell("td", money(spend), { "data-field": "recommended", "data-value": String(spend) }),
        cell("td", typeof before === "number" ? signedMoney(spend - before) : "–",
             { class: spend > before ? "up" : (spend < before ? "down" : "") }),
        cell("td", ratio(mroi), { "data-field": "mroi", "data-value": String(mroi) }),
        cell("td", binding ? (BOUND_NAMES[binding] || String(binding)) : "",
             { "data-field": "binding", class: binding ? "bound-binding" : "" }),
      );
      body.append(row);
    }
    const total = document.createElement("tr");
    total.append(cell("th", "Total", { scope: "row" }), cell("td", money(totalCurrent)), cell("td", money(totalRecommended)),
                 cell("td", ""), cell("td", ""), cell("td", ""));
    foot.append(total);

    const warnings = document.getElementById("planner-warnings");
    warnings.replaceChildren(...(answer.warnings || []).map(
      (w) => cell("li", typeof w === "string" ? w : (w.message || JSON.stringify(w)))));
    result.hidden = false;
    markCurves(answer.allocation);
    status.textContent = `Recommended split of ${money(totalRecommended)} from model ${answer.model_version || form.dataset.version}.`;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const request = readRequest();
    if (!request) return;
    fields.disabled = true;
    status.textContent = "Asking the model…";
    try {
      const response = await fetch(form.action, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(request),
      });
      let answer = null;
      try { answer = await response.json(); } catch (_) { /* not JSON: reported below */ }
      fields.disabled = false;  // before marking a field: a disabled input cannot take the focus
      if (!response.ok || !answer || !answer.allocation) {
        const error = (answer && answer.error) || {};
        const message = error.message || `The planner answered HTTP ${response.status}.`;
        const field = error.field || "";
        if (field === "budget") fieldError(null, message);
        else if (field.startsWith("bounds.")) fieldError(field.slice(7).split(/[.[]/)[0], message);
        showError(message);
        return;
      }
      render(answer);
    } catch (err) {
      showError(`Could not reach the planner: ${err.message}`);
    } finally {
      fields.disabled = false;
    }
  });
})();
