// jaxstyle studio: painting the regions on the content image. One layer per style (where that
// style applies) and one for the content (where the content loss counts), each an off-screen
// canvas at the content preview's size whose alpha is the mask; a brush paints it with soft
// or hard edges. A run sends each painted layer as a grey PNG (white: applies), which the
// server checks like any upload and resizes to the content, as `--style-masks` and
// `--content-mask` do.

const $ = (id) => document.getElementById(id);

const PREVIEW_SIDE = 768;  // the server's preview size (store.PREVIEW_SIDE): layers match it
const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
                 "#9a6324", "#469990", "#800000", "#808000", "#000075", "#bfef45", "#fabed4",
                 "#dcbeff", "#aaffc3"];  // one a style, as many as a run takes (MAX_STYLES)
const CONTENT_COLOUR = "#ffe119";
const SHOWN_ALPHA = 0.55;  // how strongly paint is shown over the picture

const regions = {
  size: null,            // [width, height] of the layers (the content preview's)
  content: null,         // the content image's id the layers were painted on
  styles: [],            // [{key, name}] in the order of the run's styles
  layers: new Map(),     // key ("content" or a style object) -> canvas
  active: null,          // the key painted (at first: the first style)
  picked: false,         // whether the person chose it
  last: null,            // the previous point of the stroke
};

function layerFor(key) {
  if (key === null) return null;
  let layer = regions.layers.get(key);
  if (!layer && regions.size) {
    layer = document.createElement("canvas");
    [layer.width, layer.height] = regions.size;
    regions.layers.set(key, layer);
  }
  return layer;
}

function painted(layer) {
  if (!layer) return false;
  const data = layer.getContext("2d").getImageData(0, 0, layer.width, layer.height).data;
  for (let i = 3; i < data.length; i += 4) if (data[i]) return true;
  return false;
}

function colourOf(key) {
  if (key === "content") return CONTENT_COLOUR;
  const index = regions.styles.findIndex((s) => s.key === key);
  return COLOURS[Math.max(0, index) % COLOURS.length];
}

// ---------------------------------------------------------------- drawing

function render() {
  const canvas = $("paint");
  if (!regions.size) { canvas.hidden = true; return; }
  canvas.hidden = false;
  [canvas.width, canvas.height] = regions.size;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const tint = document.createElement("canvas");
  [tint.width, tint.height] = regions.size;
  const t = tint.getContext("2d");
  for (const key of ["content", ...regions.styles.map((s) => s.key)]) {
    const layer = regions.layers.get(key);
    if (!layer) continue;
    t.globalCompositeOperation = "source-over";
    t.clearRect(0, 0, tint.width, tint.height);
    t.fillStyle = colourOf(key);
    t.fillRect(0, 0, tint.width, tint.height);
    t.globalCompositeOperation = "destination-in";
    t.drawImage(layer, 0, 0);
    ctx.globalAlpha = SHOWN_ALPHA;
    ctx.drawImage(tint, 0, 0);
  }
}

function dab(ctx, x, y, radius) {
  if ($("brush-soft").checked) {  // full strength inside half the radius, fading to none
    const fade = ctx.createRadialGradient(x, y, radius / 2, x, y, radius);
    fade.addColorStop(0, "rgba(255,255,255,1)");
    fade.addColorStop(1, "rgba(255,255,255,0)");
    ctx.fillStyle = fade;
  } else {
    ctx.fillStyle = "#fff";
  }
  ctx.beginPath();
  ctx.arc(x, y, radius, 0, 2 * Math.PI);
  ctx.fill();
}

function stroke(event) {
  const canvas = $("paint");
  const layer = layerFor(regions.active);
  if (!layer) return;
  const box = canvas.getBoundingClientRect();
  const scale = layer.width / box.width;  // the brush's size is in screen pixels
  const x = (event.clientX - box.left) * scale, y = (event.clientY - box.top) * scale;
  const radius = Math.max(0.5, Number($("brush-size").value) * scale / 2);
  const ctx = layer.getContext("2d");
  ctx.globalCompositeOperation = $("eraser").checked ? "destination-out" : "source-over";
  const [x0, y0] = regions.last || [x, y];
  const steps = Math.max(1, Math.ceil(Math.hypot(x - x0, y - y0) / (radius / 4)));
  for (let i = 1; i <= steps; i++) dab(ctx, x0 + (x - x0) * i / steps, y0 + (y - y0) * i / steps, radius);
  regions.last = [x, y];
  render();
}

// ---------------------------------------------------------------- the controls

function renderChoices() {
  const list = $("region-choices");
  list.replaceChildren();
  const choices = [...regions.styles.map((s, i) => [s.key, `style ${i + 1}: ${s.name}`]),
                   ["content", "content: where the photo counts"]];
  if (!choices.some(([key]) => key === regions.active)) regions.active = choices[0][0];
  choices.forEach(([key, text], i) => {
    const row = document.createElement("label");
    row.className = "region-choice";
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "region";
    radio.id = `region-${i}`;
    radio.checked = key === regions.active;
    radio.addEventListener("change", () => { regions.active = key; regions.picked = true; });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colourOf(key);
    const name = document.createElement("span");
    name.textContent = text;
    row.append(radio, swatch, name);
    list.append(row);
  });
}

export function initRegions() {
  const canvas = $("paint");
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    canvas.setPointerCapture(event.pointerId);
    regions.last = null;
    stroke(event);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (regions.last !== null && canvas.hasPointerCapture(event.pointerId)) stroke(event);
  });
  for (const end of ["pointerup", "pointercancel"]) {
    canvas.addEventListener(end, () => { regions.last = null; });
  }
  $("brush-size").addEventListener("input", () => { $("brush-size-shown").textContent = `${$("brush-size").value} px`; });
  $("clear-region").addEventListener("click", () => {
    const layer = regions.layers.get(regions.active);
    if (layer) layer.getContext("2d").clearRect(0, 0, layer.width, layer.height);
    render();
  });
  render();
}

// The content image (`{id, width, height}` or null): a new one starts with no paint.
export function setContent(image) {
  if (image && image.id === regions.content) return;
  regions.layers.clear();
  regions.content = image ? image.id : null;
  regions.size = null;
  if (image) {
    const shrink = Math.min(1, PREVIEW_SIDE / Math.max(image.width, image.height));
    regions.size = [Math.max(1, Math.round(image.width * shrink)),
                    Math.max(1, Math.round(image.height * shrink))];
  }
  $("regions").hidden = !image;
  render();
}

// The run's styles, as objects that stay the same while the style is chosen, and their names.
export function setStyles(styles) {
  regions.styles = styles.map(({ key, name }) => ({ key, name }));
  if (!regions.picked) regions.active = null;
  const keep = new Set(["content", ...styles.map((s) => s.key)]);
  for (const key of [...regions.layers.keys()]) if (!keep.has(key)) regions.layers.delete(key);
  renderChoices();
  render();
}

function maskBlob(layer) {
  const grey = document.createElement("canvas");
  [grey.width, grey.height] = [layer.width, layer.height];
  const ctx = grey.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, grey.width, grey.height);
  ctx.drawImage(layer, 0, 0);  // white paint over black: the grey level is the paint's alpha
  return new Promise((resolve) => grey.toBlob(resolve, "image/png"));
}

// What a run request carries of the regions: `{style_masks, content_mask}` (null: none), each
// painted layer uploaded by `upload(blob, name)`, which returns the mask's id.
export async function masksRequest(upload) {
  const send = async (key, name) => {
    const layer = regions.layers.get(key);
    return painted(layer) ? upload(await maskBlob(layer), name) : null;
  };
  const styleMasks = [];
  for (const [i, style] of regions.styles.entries()) {
    styleMasks.push(await send(style.key, `style-mask-${i + 1}.png`));
  }
  return { style_masks: styleMasks.some((m) => m !== null) ? styleMasks : null,
           content_mask: await send("content", "content-mask.png") };
}

async function paintFrom(key, url) {
  const image = new Image();
  image.src = url;
  await image.decode();
  const layer = layerFor(key);
  const ctx = layer.getContext("2d");
  ctx.clearRect(0, 0, layer.width, layer.height);
  ctx.drawImage(image, 0, 0, layer.width, layer.height);
  const pixels = ctx.getImageData(0, 0, layer.width, layer.height);
  const data = pixels.data;
  for (let i = 0; i < data.length; i += 4) {  // grey mask -> white paint of that alpha
    data[i + 3] = data[i];
    data[i] = data[i + 1] = data[i + 2] = 255;
  }
  ctx.putImageData(pixels, 0, 0);
}

// Paints the layers again from a history entry's masks (after `setContent` and `setStyles`).
export async function restore(record, maskUrl) {
  regions.layers.clear();
  const jobs = (record.style_masks || []).map((id, i) =>
    id && regions.styles[i] ? paintFrom(regions.styles[i].key, maskUrl(id)) : null);
  if (record.content_mask) jobs.push(paintFrom("content", maskUrl(record.content_mask)));
  await Promise.all(jobs.filter(Boolean));
  render();
}

export function colours(count) { return Array.from({ length: count }, (_, i) => COLOURS[i % COLOURS.length]); }
export { CONTENT_COLOUR };
