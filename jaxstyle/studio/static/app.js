// jaxstyle studio: the page. Everything about the options (names, kinds, defaults, help,
// choices) comes from the server, which reads it from StyleOptions; nothing is restated here.
// A job is followed through server-sent events; its picture is fetched only when the page is
// ready for a new one, so the newest wins and nothing queues up.

import { CONTENT_COLOUR, colours, initRegions, masksRequest, restore, setContent, setStyles } from "./regions.js";

const $ = (id) => document.getElementById(id);

const page = {
  form: null,          // the form schema from /api/state
  images: new Map(),   // id -> {id, name, width, height, example}
  content: null,       // chosen content image id
  styles: [],          // [{id, weight}]
  job: null,           // the job followed
  events: null,        // its EventSource
  shown: 0,            // frame number on screen
  wanted: 0,           // newest frame number announced
  fetching: false,
  lastRun: null,       // the newest finished run's record (downloads, Continue)
  history: [],
};

// ---------------------------------------------------------------- requests

async function api(path, { method = "GET", json, body, headers = {} } = {}) {
  const init = { method, headers: { ...headers } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["content-type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    const problem = new Error((data && data.error) || `${response.status} ${response.statusText}`);
    problem.field = data && data.field;
    problem.status = response.status;
    throw problem;
  }
  return data;
}

function say(id, text, kind = "error") {
  const node = $(id);
  node.textContent = text || "";
  node.className = `message ${text ? kind : ""}`;
}

// ---------------------------------------------------------------- formatting

function seconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${String(Math.round(s - 60 * m)).padStart(2, "0")} s`;
}

function number(x) {
  if (x === null || x === undefined) return "–";
  return Math.abs(x) >= 1e5 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(3) : x.toPrecision(5);
}

function label(name) { return name.replaceAll("_", " "); }

function shown(value) {
  return Array.isArray(value) ? value.join(",") : String(value);
}

// ---------------------------------------------------------------- the options form

function renderForm(schema) {
  const form = $("options-form");
  form.replaceChildren();
  for (const field of schema.fields) {
    const row = document.createElement("div");
    row.className = "field";
    row.dataset.name = field.name;
    const title = document.createElement("label");
    title.htmlFor = `opt-${field.name}`;
    title.textContent = label(field.name);
    let input;
    if (field.kind === "choice") {
      input = document.createElement("select");
      if (field.optional) input.append(new Option("(default)", ""));
      for (const choice of field.choices) input.append(new Option(choice, choice));
    } else if (field.kind === "bool") {
      input = document.createElement("input");
      input.type = "checkbox";
    } else {
      input = document.createElement("input");
      input.type = field.kind === "int" || field.kind === "float" ? "number" : "text";
      if (field.kind === "int") input.step = "1";
      if (field.kind === "float") input.step = "any";
      if (input.type === "number" && field.min !== null) input.min = String(field.min);
      if (input.type === "number" && field.max !== null) input.max = String(field.max);
    }
    input.id = `opt-${field.name}`;
    input.name = field.name;
    input.addEventListener("change", checkOptions);
    const help = document.createElement("small");
    help.className = "help";
    help.id = `help-${field.name}`;
    input.setAttribute("aria-describedby", help.id);  // read in full; shown in full on focus
    help.textContent = field.range ? `${field.help}; ${field.range}` : field.help;
    help.title = "click to read all";
    help.addEventListener("click", () => help.classList.toggle("open"));
    row.append(title, input, help);
    form.append(row);
  }
  fillForm(Object.fromEntries(schema.fields.map((f) => [f.name, f.default])));
  const preset = $("opt-preset");
  if (preset) preset.addEventListener("change", showPresetValues);
  showPresetValues();
}

// An option the preset fills in shows the preset's value until one is typed.
function showPresetValues() {
  const preset = $("opt-preset") ? $("opt-preset").value : null;
  for (const field of page.form.fields) {
    const input = $(`opt-${field.name}`);
    if (input.tagName !== "INPUT" || field.default !== null) continue;
    const value = field.by_preset && preset in field.by_preset ? field.by_preset[preset] : null;
    input.placeholder = value === null ? "default" : `${shown(value)} (${preset})`;
  }
}

function fillForm(values) {
  for (const field of page.form.fields) {
    if (!(field.name in values)) continue;
    const input = $(`opt-${field.name}`);
    const value = values[field.name];
    if (field.kind === "bool") input.checked = Boolean(value);
    else input.value = value === null || value === undefined ? "" : shown(value);
  }
  if (page.form.fields.some((f) => f.name === "preset")) showPresetValues();
}

function formValues() {
  const values = {};
  for (const field of page.form.fields) {
    const input = $(`opt-${field.name}`);
    if (field.kind === "bool") values[field.name] = input.checked;
    else if (input.value !== "") values[field.name] = input.value;
  }
  const weights = page.styles.map((s) => s.weight);
  if (weights.some((w) => w !== weights[0])) values[page.form.blend.name] = weights;
  return values;
}

function markField(name) {
  for (const row of document.querySelectorAll(".field")) {
    row.classList.toggle("invalid", row.dataset.name === name);
  }
}

async function checkOptions() {
  try {
    await api("/api/check", { method: "POST", json: { options: formValues() } });
    say("options-message", "");
    markField(null);
  } catch (problem) {
    say("options-message", problem.message);
    markField(problem.field);
  }
}

// ---------------------------------------------------------------- inputs

function imageOption(image) {
  const note = image.example ? "" : " · uploaded";
  return new Option(`${image.name} · ${image.width}×${image.height}${note}`, image.id);
}

function renderPickers() {
  for (const [id, prompt] of [["content-example", "choose a content image…"],
                              ["style-example", "add a style image…"]]) {
    const select = $(id);
    select.replaceChildren(new Option(prompt, ""));
    for (const image of page.images.values()) select.append(imageOption(image));
  }
  $("content-example").value = page.content || "";
}

function preview(id) { return `/api/images/${encodeURIComponent(id)}/preview.png`; }

function renderInputs() {
  const content = $("content-view");
  if (page.content) content.src = preview(page.content); else content.removeAttribute("src");
  const list = $("styles-chosen");
  const view = $("styles-view");
  list.replaceChildren();
  view.replaceChildren();
  const blend = page.form ? page.form.blend : null;
  page.styles.forEach((style, index) => {
    const image = page.images.get(style.id);
    const item = document.createElement("li");
    const thumb = new Image();
    thumb.src = preview(style.id);
    thumb.alt = "";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = image ? image.name : style.id;
    const weight = document.createElement("input");
    weight.type = "number";
    weight.min = "0";
    weight.step = "any";
    weight.value = style.weight;
    weight.className = "weight";
    weight.setAttribute("aria-label", `blend weight of ${name.textContent}`);
    if (blend) weight.title = `weight: ${blend.help}`;
    weight.addEventListener("change", () => { style.weight = Number(weight.value); checkOptions(); });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "×";
    remove.title = "remove this style";
    remove.addEventListener("click", () => { page.styles.splice(index, 1); renderInputs(); });
    item.append(thumb, name, weight, remove);
    list.append(item);
    const big = new Image();
    big.src = preview(style.id);
    big.alt = `style image ${index + 1}`;
    view.append(big);
  });
  setContent(page.content ? page.images.get(page.content) || null : null);
  setStyles(page.styles.map((style) => ({
    key: style, name: (page.images.get(style.id) || { name: style.id }).name })));
}

function addImage(image) {
  page.images.set(image.id, image);
  renderPickers();
}

async function upload(file) {
  say("upload-message", `uploading ${file.name}…`, "info");
  try {
    const data = await api("/api/images", {
      method: "POST", body: file, headers: { "x-filename": encodeURIComponent(file.name) },
    });
    addImage(data.image);
    say("upload-message", "");
    return data.image;
  } catch (problem) {
    say("upload-message", problem.message);
    return null;
  }
}

// ---------------------------------------------------------------- a job

function setBusy(busy) {
  $("run").disabled = busy;
  $("sweep-run").disabled = busy;
  $("stop").disabled = !busy;
  $("continue").disabled = busy || !(page.lastRun && page.lastRun.can_continue);
}

function follow(job) {
  if (page.events) page.events.close();
  page.job = job.job;
  page.shown = 0;
  page.wanted = 0;
  update(job);
  const events = new EventSource(`/api/jobs/${job.job}/events`);
  page.events = events;
  events.onmessage = (event) => {
    const snapshot = JSON.parse(event.data);
    update(snapshot);
    if (["done", "stopped", "failed"].includes(snapshot.status)) {
      events.close();
      finished(snapshot);
    }
  };
  events.onerror = () => {
    if (events.readyState === EventSource.CLOSED) say("run-message", "lost the connection to the server");
  };
}

function update(s) {
  const kind = s.kind === "sweep" ? "sweep" : "run";
  const what = s.kind === "sweep" ? "cell" : "iteration";
  $("status").textContent = `${kind} ${s.job}: ${s.status}${s.message ? ` (${s.message})` : ""}`;
  $("status").dataset.state = s.status;
  $("bar").max = Math.max(1, s.total);
  $("bar").value = s.iteration;
  $("stat-iteration").textContent = s.total ? `${s.iteration} / ${s.total}` : "–";
  $("stat-iteration").previousElementSibling.textContent = what;
  $("stat-loss").textContent = number(s.loss);
  $("stat-speed").textContent = seconds(s.per_iteration);
  $("stat-eta").textContent = s.status === "running" || s.status === "stopping" ? seconds(s.eta) : "–";
  $("stat-first").textContent = seconds(s.first_frame);
  $("preview-caption").textContent = `${kind} ${s.job} · ${s.status}`;
  drawPlot(s.plot || [], s.total);
  setBusy(!["done", "stopped", "failed"].includes(s.status));
  if (s.frame > page.wanted) {
    page.wanted = s.frame;
    fetchFrame();
  }
}

async function fetchFrame() {
  if (page.fetching || page.wanted <= page.shown) return;
  page.fetching = true;
  const job = page.job;
  try {
    const response = await fetch(`/api/jobs/${job}/frame.png?seq=${page.wanted}`);
    if (response.ok && job === page.job) {
      const seq = Number(response.headers.get("x-frame"));
      // Decoded off screen, then swapped in: the picture shown is never half loaded.
      const next = new Image();
      next.src = URL.createObjectURL(await response.blob());
      await next.decode();
      const old = $("preview");
      next.id = old.id;
      next.alt = old.alt;
      next.dataset.seq = String(Math.max(seq, page.shown));
      next.dataset.job = String(job);
      old.replaceWith(next);
      if (old.src.startsWith("blob:")) URL.revokeObjectURL(old.src);
      page.shown = Math.max(seq, page.shown);
    }
  } catch {
    // A picture that does not decode is skipped; the next one replaces it.
  } finally {
    page.fetching = false;
  }
  if (page.wanted > page.shown && job === page.job) fetchFrame();  // a newer one came meanwhile
}

async function finished(snapshot) {
  if (snapshot.status === "failed") say("run-message", snapshot.message);
  else say("run-message", "");
  await refreshHistory();
  const record = page.history.find((r) => r.id === snapshot.job);
  if (record && record.status !== "failed") showRecord(record);
  setBusy(false);
}

function showRecord(record) {
  page.lastRun = record.kind === "run" ? record : page.lastRun;
  for (const [id, path, text] of [["download-png", "image.png?download=1", "Download PNG"],
                                  ["download-json", "report.json", "JSON report"]]) {
    const link = $(id);
    link.href = `/api/jobs/${record.id}/${path}`;
    link.hidden = false;
    link.textContent = `${text} (${record.kind} ${record.id})`;
  }
  $("command").textContent = record.command || "";
  $("command").title = "the same run from the command line (paths relative to the run folder)";
  $("copy-command").hidden = !record.command;
  $("copy-command").onclick = () => copyCommand(record);
  $("download-png").setAttribute("download", "");
  $("download-json").setAttribute("download", "");
  $("continue").disabled = !(page.lastRun && page.lastRun.can_continue);
}

async function start(path, request) {
  say("run-message", "");
  try {
    const data = await api(path, { method: "POST", json: request });
    follow(data.job);
  } catch (problem) {
    say("run-message", problem.message);
    markField(problem.field);
  }
}

function inputsRequest() {
  return { content: page.content, styles: page.styles.map((s) => s.id) };
}

function maskUrl(id) { return `/api/masks/${encodeURIComponent(id)}/mask.png`; }

async function uploadMask(blob, name) {
  const data = await api("/api/masks", { method: "POST", body: blob, headers: { "x-filename": name } });
  return data.mask.id;
}

async function startRun() {
  let masks;
  try {
    masks = await masksRequest(uploadMask);
  } catch (problem) {
    say("run-message", `the regions could not be sent: ${problem.message}`);
    return;
  }
  await start("/api/runs", { ...inputsRequest(), options: formValues(), ...masks });
}

async function stopRun() {
  try { await api("/api/stop", { method: "POST" }); } catch (problem) { say("run-message", problem.message); }
}

// Ctrl+Enter (Cmd+Enter on a Mac) runs, Escape stops: neither is a browser's own shortcut in a
// page, and both say so in the buttons' titles and aria-keyshortcuts.
function shortcut(event) {
  if (event.defaultPrevented || event.repeat) return;
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !$("run").disabled) {
    event.preventDefault();
    startRun();
  } else if (event.key === "Escape" && !$("stop").disabled) {
    event.preventDefault();
    stopRun();
  }
}

// ---------------------------------------------------------------- the loss plot

function drawPlot(points, total) {
  const canvas = $("plot");
  const ctx = canvas.getContext("2d");
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 600, h = canvas.clientHeight || 120, pad = 6;
  if (canvas.width !== Math.round(w * ratio)) {  // drawn at the size it is shown
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const good = points.filter((p) => p[1] > 0);
  $("plot-caption").textContent = good.length < 2 ? "" :
    `loss ${number(good[0][1])} → ${number(good[good.length - 1][1])} (log scale, by iteration)`;
  if (good.length < 2) return;
  const xs = good.map((p) => p[0]), ys = good.map((p) => Math.log10(p[1]));
  const x0 = Math.min(...xs), x1 = Math.max(...xs, total || 0);
  const y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => pad + (w - 2 * pad) * (x - x0) / Math.max(1e-9, x1 - x0);
  const sy = (y) => h - pad - (h - 2 * pad) * (y - y0) / Math.max(1e-9, y1 - y0);
  ctx.strokeStyle = "#d8dce3";
  ctx.lineWidth = 1;
  for (let d = Math.ceil(y0); d <= Math.floor(y1); d++) {
    ctx.beginPath(); ctx.moveTo(pad, sy(d)); ctx.lineTo(w - pad, sy(d)); ctx.stroke();
  }
  ctx.strokeStyle = "#2f6fde";
  ctx.lineWidth = 2;
  ctx.beginPath();
  good.forEach((p, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, sx(p[0]), sy(ys[i])));
  ctx.stroke();
}

// ---------------------------------------------------------------- history

async function refreshHistory() {
  const state = await api("/api/state");
  page.history = state.history;
  renderHistory();
}

function renderHistory() {
  const list = $("history-list");
  list.replaceChildren();
  for (const record of page.history) {
    const item = document.createElement("li");
    item.className = `record ${record.status}`;
    item.dataset.id = record.id;
    if (record.status !== "failed") {
      const thumb = new Image();
      thumb.src = `/api/jobs/${record.id}/thumb.png`;
      thumb.alt = `${record.kind} ${record.id}`;
      const show = document.createElement("button");
      show.type = "button";
      show.className = "thumb";
      show.title = `show the picture of ${record.kind} ${record.id}`;
      show.addEventListener("click", () => showResult(record));
      show.append(thumb);
      item.append(show);
    }
    const text = document.createElement("div");
    const head = document.createElement("strong");
    const where = record.kind === "sweep" ? `${record.iteration} cells`
      : `${record.iteration} iterations`;
    head.textContent = `${record.kind} ${record.id} · ${record.status}` +
      (record.status === "failed" ? "" : ` · ${where} · ${seconds(record.seconds)}`) +
      (record.continued_from ? ` · continues ${record.continued_from}` : "");
    const names = [record.content, ...record.styles].map((id) => (page.images.get(id) || { name: id }).name);
    const inputs = document.createElement("div");
    inputs.textContent = `${names[0]} in the style of ${names.slice(1).join(" + ")}`;
    const settings = document.createElement("div");
    settings.className = "settings";
    const vary = record.vary ? Object.entries(record.vary).map(([k, v]) => `${k}=${v.join("|")}`) : [];
    settings.textContent = [...Object.entries(record.settings).map(([k, v]) => `${k}=${shown(v)}`), ...vary].join(", ");
    const masks = maskLinks(record);
    const quality = document.createElement("div");
    quality.className = "quality";
    quality.textContent = record.summary || record.message || "";
    const buttons = document.createElement("div");
    buttons.className = "buttons";
    const load = document.createElement("button");
    load.type = "button";
    load.className = "load";
    load.textContent = "Load these settings";
    load.addEventListener("click", () => loadSettings(record));
    buttons.append(load);
    if (record.command) {
      const copy = document.createElement("button");
      copy.type = "button";
      copy.className = "copy";
      copy.textContent = "Copy command";
      copy.title = record.command;
      copy.addEventListener("click", () => copyCommand(record));
      buttons.append(copy);
    }
    if (record.status !== "failed") {
      for (const [path, text] of [["image.png?download=1", "PNG"], ["report.json", "JSON"]]) {
        const link = document.createElement("a");
        link.href = `/api/jobs/${record.id}/${path}`;
        link.textContent = text;
        link.setAttribute("download", "");
        buttons.append(link);
      }
    }
    text.append(head, inputs, settings, ...masks, quality, buttons);
    item.append(text);
    list.append(item);
  }
}

// The regions a run was painted with, each shown in its colour and downloadable as a PNG.
function maskLinks(record) {
  const files = record.mask_files || { style: [], content: null };
  const shown = [];
  const tint = colours(record.styles.length);
  (record.style_masks || []).forEach((id, i) => {
    if (id) shown.push([id, files.style[i], tint[i], `style ${i + 1} region`]);
  });
  if (record.content_mask) shown.push([record.content_mask, files.content, CONTENT_COLOUR, "content region"]);
  if (!shown.length) return [];
  const row = document.createElement("div");
  row.className = "masks";
  row.append("regions:");
  for (const [id, file, colour, text] of shown) {
    const picture = new Image();
    picture.src = maskUrl(id);
    picture.alt = text;
    picture.style.borderColor = colour;
    if (file && record.status !== "failed") {
      const link = document.createElement("a");
      link.href = `/api/jobs/${record.id}/masks/${file}`;
      link.setAttribute("download", "");
      link.title = `download the ${text} (${file})`;
      link.append(picture);
      row.append(link);
    } else {
      row.append(picture);
    }
  }
  return [row];
}

// The run's command line on the clipboard; where the page may not write there, the command is
// shown selected, for Ctrl+C.
async function copyCommand(record) {
  const what = `${record.kind} ${record.id}`;
  try {
    await navigator.clipboard.writeText(record.command);
    say("run-message", `copied the command of ${what}`, "info");
    return;
  } catch {
    // No clipboard (a page not served from this machine, or permission refused): select it.
  }
  const shown = $("command");
  shown.textContent = record.command;
  const range = document.createRange();
  range.selectNodeContents(shown);
  window.getSelection().removeAllRanges();
  window.getSelection().addRange(range);
  say("run-message", `the command of ${what} is selected: press Ctrl+C to copy it`, "info");
}

function showResult(record) {
  const img = $("preview");
  img.src = `/api/jobs/${record.id}/image.png`;
  img.dataset.seq = "";
  $("preview-caption").textContent = `${record.kind} ${record.id} · ${record.status}`;
  showRecord(record);
}

async function loadSettings(record) {
  // What the person set, over the defaults: options a preset fills in stay the preset's.
  const defaults = Object.fromEntries(page.form.fields.map((f) => [f.name, f.default]));
  fillForm({ ...defaults, ...record.settings });
  page.content = record.content;
  const blend = record.settings[page.form.blend.name];
  page.styles = record.styles.map((id, i) => ({ id, weight: blend ? blend[i] : 1 }));
  renderPickers();
  renderInputs();
  checkOptions();
  try {
    await restore(record, maskUrl);
  } catch {
    say("run-message", `settings of ${record.kind} ${record.id} loaded, but not its regions`);
    return;
  }
  say("run-message", `settings of ${record.kind} ${record.id} loaded`, "info");
}

// ---------------------------------------------------------------- the sweep

function renderSweep(schema) {
  for (const [id, none] of [["sweep-option", null], ["sweep-option2", "(no second option)"]]) {
    const select = $(id);
    select.replaceChildren();
    if (none) select.append(new Option(none, ""));
    for (const name of schema.sweep.options) select.append(new Option(label(name), name));
  }
  $("sweep-size").value = schema.sweep.size;
  $("sweep-iterations").value = schema.sweep.iterations;
}

function sweepRequest() {
  const vary = [[$("sweep-option").value, $("sweep-values").value],
                [$("sweep-option2").value, $("sweep-values2").value]]
    .filter(([name, values]) => name && values.trim())
    .map(([name, values]) => `${name}=${values.trim()}`);
  const options = { ...formValues(), size: $("sweep-size").value, iterations: $("sweep-iterations").value };
  return { ...inputsRequest(), options, vary };
}

// ---------------------------------------------------------------- start

async function init() {
  initRegions();
  const state = await api("/api/state");
  page.form = state.form;
  for (const image of state.images) page.images.set(image.id, image);
  renderForm(state.form);
  renderSweep(state.form);
  renderPickers();
  renderInputs();
  $("more").value = $("opt-iterations") ? $("opt-iterations").value : "";
  page.history = state.history;
  renderHistory();
  const latest = page.history.find((r) => r.kind === "run" && r.status !== "failed");
  if (latest) page.lastRun = latest;
  showNetwork(state);
  if (state.job && !["done", "stopped", "failed"].includes(state.job.status)) follow(state.job);
  else setBusy(false);

  $("content-example").addEventListener("change", (e) => {
    page.content = e.target.value || null;
    renderInputs();
  });
  $("style-example").addEventListener("change", (e) => {
    if (e.target.value) page.styles.push({ id: e.target.value, weight: 1 });
    e.target.value = "";
    renderInputs();
  });
  $("content-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    const image = file && await upload(file);
    if (image) { page.content = image.id; renderPickers(); renderInputs(); }
  });
  $("style-file").addEventListener("change", async (e) => {
    const files = [...e.target.files];
    e.target.value = "";
    for (const file of files) {
      const image = await upload(file);
      if (image) page.styles.push({ id: image.id, weight: 1 });
    }
    renderInputs();
  });
  $("run").addEventListener("click", startRun);
  $("stop").addEventListener("click", stopRun);
  document.addEventListener("keydown", shortcut);
  $("continue").addEventListener("click", () => {
    if (!page.lastRun) return;
    start(`/api/jobs/${page.lastRun.id}/continue`, { iterations: Number($("more").value) });
  });
  $("sweep-run").addEventListener("click", () => start("/api/sweeps", sweepRequest()));
}

function showNetwork(state) {
  const node = $("network");
  if (state.network_error) {
    node.textContent = state.network_error;
    node.className = "network error";
  } else if (!state.network) {
    node.textContent = "loading the network…";
    setTimeout(async () => showNetwork(await api("/api/state")), 1000);
  } else {
    node.textContent = state.network_random ? `${state.network} (untrained: a test aid)` : state.network;
    node.title = state.network_label;
    node.className = "network";
  }
}

init().catch((problem) => say("run-message", `the page could not start: ${problem.message}`));
