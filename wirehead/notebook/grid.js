// wirehead SampleGrid: several samples in one plane, linked (slice, crosshair, window); the generation's QC.
// The kernel sends uint8 volumes once (_volumes: the panels one after another); moves redraw here.

const PLANES = ["axial", "coronal", "sagittal"];
const AXIS = { sagittal: 0, coronal: 1, axial: 2 };
const OPP = { R: "L", L: "R", A: "P", P: "A", S: "I", I: "S" };

function el(tag, cls, parent, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function bytesOf(v) {
  if (!v) return null;
  if (v instanceof DataView) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  return null;
}

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function render({ model, el: root }) {
  root.classList.add("wirehead-viewer", "wirehead-grid-viewer");
  const top = el("div", "wh-row", root);
  const planeWrap = el("label", "wh-field", top);
  el("span", "wh-label", planeWrap, "plane");
  const planeSel = el("select", "wirehead-grid-plane", planeWrap);
  for (const p of PLANES) { const o = el("option", "", planeSel, p); o.value = p; }
  const sliceWrap = el("label", "wh-field", top);
  el("span", "wh-label", sliceWrap, "slice");
  const slider = el("input", "wirehead-grid-slider", sliceWrap); slider.type = "range"; slider.min = 0;
  const sliceOut = el("span", "wh-out", sliceWrap);
  const opWrap = el("label", "wh-field", top);
  el("span", "wh-label", opWrap, "opacity");
  const opacity = el("input", "wirehead-grid-opacity", opWrap);
  Object.assign(opacity, { type: "range", min: 0, max: 1, step: 0.05 });
  const qcButton = el("button", "wh-button wirehead-grid-qc", top, "QC of the generation");
  const message = el("div", "wh-message wirehead-message", root);
  const panels = el("div", "wh-planes wirehead-grid-panels", root);
  const legend = el("div", "wh-legend wirehead-legend", root);
  const qc = el("div", "wirehead-qc-table", root);

  let vols = [], labs = [], shape = [1, 1, 1];
  let loads = 0;
  async function load() {
    const mine = ++loads;
    const s = model.get("shape"), n = s[0] * s[1] * s[2];
    const shown = model.get("_shown") || [];
    const v = bytesOf(model.get("_volumes"));
    let l = bytesOf(model.get("_labels"));
    if (l && l.length) {
      try {
        l = await inflate(l);
        if (model.get("_label_bits") === 16) l = new Uint16Array(l.buffer, 0, l.byteLength >> 1);
      } catch (e) { l = null; }
    } else l = null;
    if (mine !== loads) return false;
    shape = s;
    vols = []; labs = [];
    for (let k = 0; k < shown.length; k++) {
      vols.push(v && v.length >= (k + 1) * n ? v.subarray(k * n, (k + 1) * n) : null);
      labs.push(l && l.length >= (k + 1) * n ? l.subarray(k * n, (k + 1) * n) : null);
    }
    return true;
  }

  function inPlane(p) { return [0, 1, 2].filter((a) => a !== AXIS[p]); }

  function lutFor(k) {  // panel k's uint8 codes -> grey through the shared window (in image units)
    const cm = (model.get("_luts") || {}).gray || [];
    const [qlo, qhi] = (model.get("_qranges") || [])[k] || [0, 1];
    const [lo, hi] = model.get("window");
    const t = new Uint8Array(256);
    for (let q = 0; q < 256; q++) {
      const v = qlo + (q * (qhi - qlo)) / 255;
      const x = Math.max(0, Math.min(1, hi > lo ? (v - lo) / (hi - lo) : 0));
      t[q] = cm[Math.round(x * 255) * 3] || 0;
    }
    return t;
  }

  function colourTable() {
    const table = model.get("_label_colors") || {};
    let max = 0;
    for (const k of Object.keys(table)) max = Math.max(max, Number(k));
    const col = new Uint8Array((max + 1) * 3), on = new Uint8Array(max + 1);
    for (const [k, c] of Object.entries(table)) { const l = Number(k); col.set(c, l * 3); on[l] = 1; }
    for (const l of model.get("hidden_labels") || []) if (l <= max) on[l] = 0;
    on[0] = 0;
    return [col, on];
  }

  function build() {
    panels.innerHTML = "";
    const shown = model.get("_shown") || [];
    shown.forEach((sampleIndex, k) => {
      const box = el("div", "wh-plane", panels);
      const frame = el("div", "wh-frame", box);
      const c = el("canvas", "wirehead-grid-panel wirehead-grid-panel-" + k, frame);
      c.dataset.drawn = "0";
      for (const side of ["left", "right", "top", "bottom"]) el("span", "wh-letter wh-" + side, frame);
      el("span", "wh-out", box, "sample " + sampleIndex);
      c.addEventListener("mousedown", (ev) => {
        const p = model.get("plane");
        const [a, b] = inPlane(p);
        const r = c.getBoundingClientRect();
        const i = Math.floor(((ev.clientX - r.left) / r.width) * shape[a]);
        const j = shape[b] - 1 - Math.floor(((ev.clientY - r.top) / r.height) * shape[b]);
        const clip = (x, n) => Math.max(0, Math.min(n - 1, x));
        model.set(PLANES[2 - a], clip(i, shape[a])); model.set(PLANES[2 - b], clip(j, shape[b]));
        drawAll(); model.save_changes();  // one click moves every panel's crosshair
      });
    });
  }

  function drawAll() {
    const p = model.get("plane");
    const [a, b] = inPlane(p);
    const W = shape[a], H = shape[b];
    const st = [shape[1] * shape[2], shape[2], 1];
    const base = model.get(p) * st[AXIS[p]];
    const sp = model.get("spacing");
    const scale = model.get("size") / Math.max(W * sp[a], H * sp[b]);
    const dw = Math.max(1, Math.round(W * sp[a] * scale)), dh = Math.max(1, Math.round(H * sp[b] * scale));
    const [col, on] = colourTable();
    const alpha = model.get("opacity");
    const codes = model.get("axcodes");
    const canvases = panels.querySelectorAll("canvas");
    canvases.forEach((c, k) => {
      const vol = vols[k], lab = labs[k];
      if (!vol) return;
      const off = document.createElement("canvas"); off.width = W; off.height = H;
      const octx = off.getContext("2d");
      const img = octx.createImageData(W, H);
      const px = img.data;
      const t = lutFor(k);
      for (let r = 0; r < H; r++) {
        const j = H - 1 - r;
        for (let i = 0, o = r * W * 4; i < W; i++, o += 4) {
          const idx = base + i * st[a] + j * st[b];
          let g = t[vol[idx]], R = g, G = g, B = g;
          if (lab && alpha > 0) {
            const l = lab[idx];
            if (l > 0 && l < on.length && on[l]) {
              R = (1 - alpha) * R + alpha * col[l * 3]; G = (1 - alpha) * G + alpha * col[l * 3 + 1];
              B = (1 - alpha) * B + alpha * col[l * 3 + 2];
            }
          }
          px[o] = R; px[o + 1] = G; px[o + 2] = B; px[o + 3] = 255;
        }
      }
      octx.putImageData(img, 0, 0);
      if (c.width !== dw || c.height !== dh) { c.width = dw; c.height = dh; }
      const ctx = c.getContext("2d");
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(off, 0, 0, dw, dh);
      if (model.get("crosshair")) {
        const x = ((model.get(PLANES[2 - a]) + 0.5) / W) * dw, y = ((H - model.get(PLANES[2 - b]) - 0.5) / H) * dh;
        ctx.strokeStyle = "rgba(255, 220, 0, 0.8)";
        ctx.beginPath();
        ctx.moveTo(Math.round(x) + 0.5, 0); ctx.lineTo(Math.round(x) + 0.5, dh);
        ctx.moveTo(0, Math.round(y) + 0.5); ctx.lineTo(dw, Math.round(y) + 0.5);
        ctx.stroke();
      }
      const frame = c.parentElement;
      frame.style.width = dw + "px"; frame.style.height = dh + "px";
      frame.querySelector(".wh-right").textContent = codes[a]; frame.querySelector(".wh-left").textContent = OPP[codes[a]];
      frame.querySelector(".wh-top").textContent = codes[b]; frame.querySelector(".wh-bottom").textContent = OPP[codes[b]];
      c.dataset.drawn = String(Number(c.dataset.drawn) + 1);
    });
    slider.max = Math.max(0, shape[AXIS[p]] - 1);
    slider.value = model.get(p);
    sliceOut.textContent = `${model.get(p)}/${slider.max}`;
  }

  function updateLegend() {
    legend.innerHTML = "";
    const names = model.get("label_names") || {};
    const hidden = new Set(model.get("hidden_labels") || []);
    for (const [k, c] of Object.entries(model.get("_label_colors") || {})) {
      const l = Number(k);
      const item = el("span", "wh-legend-item wirehead-legend-" + l + (hidden.has(l) ? " wh-hidden" : ""), legend);
      el("span", "wh-swatch", item).style.background = `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
      el("span", "", item, `${l} ${names[k] !== undefined ? names[k] : "label " + l}`);
      item.addEventListener("click", () => {
        const now = new Set(model.get("hidden_labels") || []);
        if (now.has(l)) now.delete(l); else now.add(l);
        model.set("hidden_labels", [...now].sort((x, y) => x - y));
        updateLegend(); drawAll(); model.save_changes();
      });
    }
  }

  function sync() {
    planeSel.value = model.get("plane");
    opacity.value = model.get("opacity");
    message.textContent = model.get("message");
    message.style.display = model.get("message") ? "" : "none";
    qc.innerHTML = model.get("qc_html") || "";
    qcButton.style.display = model.offline ? "none" : "";
  }

  planeSel.addEventListener("change", () => { model.set("plane", planeSel.value); drawAll(); model.save_changes(); });
  slider.addEventListener("input", () => { model.set(model.get("plane"), Number(slider.value)); drawAll(); model.save_changes(); });
  opacity.addEventListener("input", () => { model.set("opacity", Number(opacity.value)); drawAll(); model.save_changes(); });
  qcButton.addEventListener("click", () => { model.set("_qc_clicks", (model.get("_qc_clicks") || 0) + 1); model.save_changes(); });

  const full = async () => { if (await load()) { build(); sync(); updateLegend(); drawAll(); } };
  model.on("change:_version", full);
  for (const k of ["plane", "axial", "coronal", "sagittal", "window", "opacity", "crosshair", "hidden_labels", "size"])
    model.on("change:" + k, drawAll);
  for (const k of ["message", "qc_html"]) model.on("change:" + k, sync);
  full();
  return () => { model.off("change:_version", full); };
}

export default { render };
