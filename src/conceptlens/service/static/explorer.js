// The conceptlens explorer: plain JavaScript over the service's JSON API (no build step).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const SHOWN = 30; // concept rows shown without a filter
  const state = {
    token: sessionStorage.getItem("conceptlens-token") || "",
    model: null, base: null, current: null, values: {}, seq: 0, timer: null,
    rows: new Map(), range: { min: -1, max: 1, step: 0.01 }, pending: [], selected: null,
    absent: new Map(), // concept -> the value "off" sets (GET /model's "absent")
  };

  class ApiError extends Error {}

  function setStatus(text, error) {
    $("status").textContent = text || "";
    $("status").classList.toggle("error", Boolean(error));
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text; // never innerHTML: names are data
    return node;
  }

  function fmt(x, digits) { return (x >= 0 ? "+" : "") + x.toFixed(digits === undefined ? 3 : digits); }
  function pct(p) { return (100 * p).toFixed(1) + "%"; }
  // the text the browser test compares with the API's answer
  function predictionText(pred) { return pred.predicted + " \u2014 " + pct(pred.probability); }

  async function api(path, options) {
    const opts = Object.assign({}, options || {});
    opts.headers = Object.assign({}, opts.headers || {});
    if (state.token) opts.headers.Authorization = "Bearer " + state.token;
    const r = await fetch(path, opts);
    if (r.status === 401 || r.status === 403) {
      $("token-box").hidden = false;
      $("token").focus();
      throw new ApiError("This service needs its token; enter it above.");
    }
    if (!r.ok) {
      let detail = r.status + " " + r.statusText;
      try { const body = await r.json(); detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); } catch (e) { /* not JSON */ }
      throw new ApiError(detail);
    }
    return r;
  }

  async function json(path, body) {
    const options = body === undefined ? {} : {
      method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } };
    return (await api(path, options)).json();
  }

  function guard(fn) {
    return async (...args) => {
      try { await fn(...args); } catch (e) {
        if (e instanceof ApiError) setStatus(e.message, true);
        else throw e;
      }
    };
  }

  // -- the model -------------------------------------------------------------------------
  async function init() {
    const m = await json("/model");
    state.model = m;
    state.absent = new Map(m.concepts.map((c, i) => [c, m.absent[i]]));
    $("off-note").textContent = "\u201coff\u201d sets a concept to its value on images without it: " +
      m.absent_rule + ".";
    $("model-info").textContent = m.model + ": " + m.method + ", " + m.classes.length + " classes, " +
      m.concepts.length + " concepts, NEC " + m.nec.toFixed(1) + " \u2014 backbone " + m.backbone_id;
    for (const select of [$("explain-class"), $("weights-class"), $("edit-classes")]) {
      for (const c of m.classes) select.append(el("option", { value: c }, c));
    }
    for (const c of m.concepts) $("concept-names").append(el("option", { value: c }));
    $("edit-log").replaceChildren(...(m.edit_log.length ? m.edit_log.map(logItem)
      : [el("li", {}, "none: the model is as fitted")]));
    await showWeights();
    await loadGallery();
    document.body.dataset.ready = "ok";
  }

  function logItem(e) {
    return el("li", {}, JSON.stringify(e.concept) + " x " + e.factor + " for " + (e.classes || []).join(", ") +
      (e.note ? " (" + e.note + ")" : ""));
  }

  // -- images ----------------------------------------------------------------------------
  async function loadGallery() {
    const listing = await json("/images");
    if (!listing.images.length) {
      $("gallery-note").textContent = "No example images (start the service with --images FOLDER); upload one.";
      return;
    }
    $("gallery-note").textContent = "or pick an example from " + listing.folder + ":";
    const buttons = listing.images.map((item) => {
      const button = el("button", { type: "button", "aria-pressed": "false", title: item.name });
      const img = el("img", { alt: item.name });
      button.append(img);
      button.addEventListener("click", guard(() => selectExample(item, button)));
      $("gallery").append(el("li"));
      $("gallery").lastChild.append(button);
      return { item, img, button };
    });
    await selectExample(buttons[0].item, buttons[0].button);
    for (const { item, img } of buttons) { // one at a time: the service decodes each
      const blob = await (await api("/images/" + item.index + "/thumbnail")).blob();
      img.src = URL.createObjectURL(blob);
    }
  }

  async function selectExample(item, button) {
    for (const b of $("gallery").querySelectorAll("button")) b.setAttribute("aria-pressed", String(b === button));
    const blob = await (await api("/images/" + item.index)).blob();
    await predictBlob(blob, item.name);
  }

  async function predictBlob(blob, name) {
    setStatus("Classifying " + name + "\u2026");
    const preview = $("preview");
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(blob);
    preview.alt = name;
    preview.hidden = false;
    const r = await api("/predict?top=0", { method: "POST", body: blob,
      headers: { "Content-Type": blob.type || "application/octet-stream" } });
    state.base = await r.json();
    state.values = {};
    const acts = Object.values(state.base.activations);
    // the slider reaches each concept's current and "off" values
    const ends = acts.concat(Array.from(state.absent.values()));
    const lo = ends.reduce((a, b) => Math.min(a, b), 0), hi = ends.reduce((a, b) => Math.max(a, b), 0);
    const pad = (hi - lo) * 0.25 || 1;
    state.range = { min: lo - pad, max: hi + pad, step: (hi - lo + 2 * pad) / 200 };
    state.rows.clear();
    $("concepts").replaceChildren();
    $("edit-preview").textContent = "";
    await refresh(true);
    setStatus(name + ": " + predictionText(state.base));
  }

  // -- prediction and interventions ------------------------------------------------------
  function explainedClass() { return $("explain-class").value || (state.base && state.base.predicted); }

  async function refresh(rebuild) {
    if (!state.base) return;
    const seq = ++state.seq;
    const pred = await json("/intervene", { image_id: state.base.image_id, values: state.values,
      classes: [explainedClass()], top: 10 });
    if (seq !== state.seq) return; // a newer request is on its way
    state.current = pred;
    if (rebuild) buildRows(pred);
    render(pred);
  }

  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(guard(() => refresh(false)), 60);
  }

  function render(pred) {
    $("prediction").textContent = predictionText(pred);
    const n = Object.keys(state.values).length;
    $("intervention-note").textContent = n
      ? "with " + n + " concept value(s) set by you (was " + predictionText(state.base) + ")"
      : "as the model sees the image";
    $("probabilities").replaceChildren(...pred.classes.map((c) => {
      const li = el("li");
      const bar = el("span", { class: "bar", "aria-hidden": "true" });
      const fill = el("span");
      fill.style.width = (100 * c.probability).toFixed(1) + "%";
      bar.append(fill);
      li.append(bar, " " + c.class + " " + pct(c.probability));
      return li;
    }));
    const ex = pred.explanations[0];
    const total = ex.contributions.reduce((s, c) => s + c.contribution, 0) + ex.others;
    $("logit-sum").textContent = "score of " + ex.class + " = " + ex.logit.toFixed(3) + " = concepts " +
      fmt(total) + " + bias " + fmt(ex.intercept) + (ex.residual ? " + residual " + fmt(ex.residual) : "");
    const contrib = new Map(ex.contributions.map((c) => [c.concept, c.contribution]));
    const scale = Math.max(1e-9, ...ex.contributions.map((c) => Math.abs(c.contribution)));
    for (const [name, row] of state.rows) {
      const a = pred.activations[name];
      const c = contrib.get(name) || 0;
      if (document.activeElement !== row.slider) row.slider.value = String(a);
      row.output.textContent = a.toFixed(3);
      row.contrib.textContent = fmt(c);
      const width = 50 * Math.min(1, Math.abs(c) / scale);
      row.fill.className = c >= 0 ? "pos" : "neg";
      row.fill.style.left = (c >= 0 ? 50 : 50 - width) + "%";
      row.fill.style.width = width + "%";
      row.node.classList.toggle("set", name in state.values);
      row.off.checked = name in state.values && state.values[name] === state.absent.get(name);
    }
  }

  function order(pred) {
    // the explained class's concepts by |contribution|, then every other concept
    const first = pred.explanations[0].contributions.map((c) => c.concept);
    const seen = new Set(first);
    return first.concat(state.model.concepts.filter((c) => !seen.has(c)));
  }

  function buildRows(pred) {
    const filter = $("concept-filter").value.trim().toLowerCase();
    const names = order(pred).filter((c) => !filter || c.toLowerCase().includes(filter)).slice(0, filter ? 50 : SHOWN);
    const box = $("concepts");
    box.replaceChildren();
    state.rows.clear();
    names.forEach((name, i) => {
      const id = "concept-" + i;
      const node = el("div", { class: "concept", "data-concept": name });
      const label = el("label", { for: id }, name);
      const slider = el("input", { id, type: "range", min: state.range.min, max: state.range.max,
        step: state.range.step, value: pred.activations[name] });
      const output = el("output", { for: id });
      const absent = state.absent.get(name);
      const offLabel = el("label", { class: "small", title: "off: " + name + "'s value on images without it" });
      const off = el("input", { type: "checkbox", "aria-label": "switch " + name + " off",
        "data-absent": String(absent) });
      offLabel.append(off, " off = " + absent.toFixed(3));
      const reset = el("button", { type: "button", "aria-label": "reset " + name, title: "reset" }, "\u21ba");
      const bar = el("span", { class: "bar signed", "aria-hidden": "true" });
      const fill = el("span");
      bar.append(fill);
      const contrib = el("span", { class: "contrib" });
      node.append(label, slider, output, offLabel, reset, bar, contrib);
      box.append(node);
      slider.addEventListener("input", () => { state.values[name] = Number(slider.value); schedule(); });
      off.addEventListener("change", () => {
        if (off.checked) state.values[name] = absent; else delete state.values[name];
        schedule();
      });
      reset.addEventListener("click", () => { delete state.values[name]; slider.blur(); schedule(); });
      state.rows.set(name, { node, slider, output, off, fill, contrib });
    });
  }

  // -- class weights ---------------------------------------------------------------------
  async function showWeights() {
    const cls = $("weights-class").value || state.model.classes[0];
    const w = await json("/weights?class=" + encodeURIComponent(cls) + "&top=50");
    $("weights-caption").textContent = w.non_zero + " non-zero weight(s)" +
      (w.non_zero > w.weights.length ? ", the " + w.weights.length + " largest shown" : "") +
      "; bias " + fmt(w.intercept);
    const scale = Math.max(1e-9, ...w.weights.map((r) => Math.abs(r.weight)));
    $("weights").tBodies[0].replaceChildren(...w.weights.map((r) => {
      const tr = el("tr");
      const bar = el("span", { class: "bar signed", "aria-hidden": "true" });
      const fill = el("span", { class: r.weight >= 0 ? "pos" : "neg" });
      const width = 50 * Math.abs(r.weight) / scale;
      fill.style.left = (r.weight >= 0 ? 50 : 50 - width) + "%";
      fill.style.width = width + "%";
      bar.append(fill);
      const value = el("td");
      value.append(bar, " " + fmt(r.weight));
      tr.append(el("td", {}, r.concept), value);
      return tr;
    }));
  }

  // -- edits -----------------------------------------------------------------------------
  function renderPending() {
    $("pending").replaceChildren(...state.pending.map((ch, i) => {
      const li = el("li", {}, JSON.stringify(ch.concept) + " x " + ch.factor + " for " +
        (ch.classes ? ch.classes.join(", ") : "every class"));
      const remove = el("button", { type: "button", "aria-label": "remove this change" }, "remove");
      remove.addEventListener("click", () => { state.pending.splice(i, 1); renderPending(); });
      li.append(remove);
      return li;
    }));
  }

  function addChange(event) {
    event.preventDefault();
    const concept = $("edit-concept").value;
    if (!state.model.concepts.includes(concept)) {
      setStatus("Unknown concept " + JSON.stringify(concept) + ": pick one from the list.", true);
      return;
    }
    const factor = Number($("edit-factor").value);
    if (!Number.isFinite(factor)) { setStatus("The factor must be a number.", true); return; }
    const classes = Array.from($("edit-classes").selectedOptions, (o) => o.value);
    state.pending.push({ concept, factor, classes: classes.length ? classes : null, note: $("edit-note").value });
    renderPending();
    setStatus("");
  }

  async function previewEdit() {
    if (!state.base || !state.pending.length) { setStatus("Add a change and pick an image first.", true); return; }
    const pred = await json("/intervene", { image_id: state.base.image_id, values: state.values,
      classes: [explainedClass()], top: 3, edit: state.pending });
    $("edit-preview").textContent = "Edited model on this image: " + predictionText(pred) +
      " (now: " + $("prediction").textContent + ")";
  }

  async function downloadEdit() {
    if (!state.pending.length) { setStatus("Add a change first.", true); return; }
    const r = await api("/edit", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ changes: state.pending, note: $("edit-note").value }) });
    const name = (/filename="([^"]+)"/.exec(r.headers.get("Content-Disposition") || "") || [])[1] || "edited.zip";
    const link = $("download");
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(await r.blob());
    link.download = name;
    link.textContent = "save " + name + " again";
    link.hidden = false;
    link.click();
    setStatus("Edited model: " + name + " (model.json with its edit log, weights, edit_log.json).");
  }

  // -- wiring ----------------------------------------------------------------------------
  $("upload").addEventListener("change", guard(async () => {
    const file = $("upload").files[0];
    if (!file) return;
    for (const b of $("gallery").querySelectorAll("button")) b.setAttribute("aria-pressed", "false");
    await predictBlob(file, file.name);
  }));
  $("explain-class").addEventListener("change", guard(() => refresh(true)));
  $("concept-filter").addEventListener("input", () => { if (state.current) { buildRows(state.current); render(state.current); } });
  $("reset").addEventListener("click", guard(() => { state.values = {}; return refresh(false); }));
  $("weights-class").addEventListener("change", guard(showWeights));
  $("edit-form").addEventListener("submit", addChange);
  $("edit-preview-button").addEventListener("click", guard(previewEdit));
  $("edit-download").addEventListener("click", guard(downloadEdit));
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token").value;
    sessionStorage.setItem("conceptlens-token", state.token);
    $("token-box").hidden = true;
    guard(init)();
  });
  guard(init)();
})();
