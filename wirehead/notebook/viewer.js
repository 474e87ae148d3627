// wirehead SliceViewer: draws the three planes of a uint8 volume (and a label map) in canvases.
// The kernel sends a sample once (traits _volume/_labels); slider moves, clicks and keys redraw here.
// The same module runs in a live kernel (anywidget) and in SliceViewer.to_html() (a tiny model shim).

const PLANES = ["axial", "coronal", "sagittal"];
const AXIS = { sagittal: 0, coronal: 1, axial: 2 };
const OPP = { R: "L", L: "R", A: "P", P: "A", S: "I", I: "S" };

function bytesOf(v) {
  if (!v) return null;
  let buf, off, len;
  if (v instanceof DataView) { buf = v.buffer; off = v.byteOffset; len = v.byteLength; }
  else if (v instanceof ArrayBuffer) { buf = v; off = 0; len = v.byteLength; }
  else if (ArrayBuffer.isView(v)) { buf = v.buffer; off = v.byteOffset; len = v.byteLength; }
  else return null;
  if (len === 0) return null;
  return new Uint8Array(buf, off, len);
}

function el(tag, cls, parent, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function select(parent, label, cls) {
  const wrap = el("label", "wh-field " + cls, parent);
  el("span", "wh-label", wrap, label);
  return el("select", "", wrap);
}

function sampleText(i, n) {  // which sample of how many, counted from 1 ("3/16"; viewer.sample is 2)
  return n > 0 ? `${i + 1}/${n}` : "none";
}

function render({ model, el: root }) {
  root.classList.add("wirehead-viewer");
  const top = el("div", "wh-row", root);
  const sampleWrap = el("label", "wh-field wh-sample", top);
  el("span", "wh-label", sampleWrap, "sample");
  const sample = el("input", "wirehead-slider-sample", sampleWrap);
  sample.type = "range";
  const sampleOut = el("span", "wh-out", sampleWrap);
  const newest = el("button", "wh-button wirehead-newest", top, "newest generation");
  newest.title = "show the newest read generation";
  const thumbWrap = el("label", "wh-field", top);
  const thumbBox = el("input", "wirehead-thumbnails", thumbWrap); thumbBox.type = "checkbox";
  el("span", "wh-label", thumbWrap, "thumbnails");
  const followWrap = el("label", "wh-field", top);
  const followBox = el("input", "wirehead-follow", followWrap); followBox.type = "checkbox";
  el("span", "wh-label", followWrap, "follow new generations");
  const info = el("span", "wh-info wirehead-info", top);
  const grid = el("div", "wh-grid wirehead-grid", root);
  const controls = el("div", "wh-row", root);
  const kindSel = select(controls, "image", "wh-kind");
  const labelSel = select(controls, "labels", "wh-labelkind");
  const cmapSel = select(controls, "colours", "wh-cmap");
  const winWrap = el("label", "wh-field wh-window", controls);
  el("span", "wh-label", winWrap, "window");
  const wlo = el("input", "wirehead-window-lo", winWrap); wlo.type = "number";
  const whi = el("input", "wirehead-window-hi", winWrap); whi.type = "number";
  const opWrap = el("label", "wh-field", controls);
  el("span", "wh-label", opWrap, "opacity");
  const opacity = el("input", "wirehead-opacity", opWrap);
  Object.assign(opacity, { type: "range", min: 0, max: 1, step: 0.05 });
  const chWrap = el("label", "wh-field", controls);
  el("span", "wh-label", chWrap, "channel");
  const channel = el("input", "wirehead-slider-channel", chWrap); channel.type = "range"; channel.min = 0;
  const chOut = el("span", "wh-out", chWrap);
  const crossWrap = el("label", "wh-field", controls);
  const cross = el("input", "wirehead-crosshair", crossWrap); cross.type = "checkbox";
  el("span", "wh-label", crossWrap, "crosshair");
  const radioWrap = el("label", "wh-field", controls);
  const radio = el("input", "wirehead-radiological", radioWrap); radio.type = "checkbox";
  el("span", "wh-label", radioWrap, "radiological");
  radioWrap.title = "radiological convention: the patient's right on the screen's left (default: neurological)";
  const reset = el("button", "wh-button wirehead-reset", controls, "reset view");
  reset.title = "reset zoom, pan and window (right-drag or shift-drag: window/level; ctrl-wheel: zoom; " +
                "middle-drag or ctrl-drag: pan; wheel: slice)";
  const message = el("div", "wh-message wirehead-message", root);
  const planesRow = el("div", "wh-planes", root);
  const views = {};
  for (const p of PLANES) {
    const box = el("div", "wh-plane", planesRow);
    const frame = el("div", "wh-frame", box);
    const canvas = el("canvas", "wirehead-plane-" + p, frame);
    canvas.tabIndex = 0;
    canvas.dataset.drawn = "0";
    const letters = {};
    for (const side of ["left", "right", "top", "bottom"]) letters[side] = el("span", "wh-letter wh-" + side, frame);
    const sl = el("input", "wirehead-slider-" + p, box);
    sl.type = "range"; sl.min = 0;
    const out = el("span", "wh-out wh-plane-name", box);
    views[p] = { box, frame, canvas, letters, slider: sl, out, off: document.createElement("canvas") };
  }
  const readout = el("div", "wh-readout wirehead-readout", root);
  const legend = el("div", "wh-legend wirehead-legend", root);

  // no kernel behind the model (an exported page): what would ask the kernel is shown, not offered
  const offline = Boolean(model.offline);

  let vol = null, lab = null, shape = [1, 1, 1];
  const idx = { sagittal: 0, coronal: 0, axial: 0 };
  // display only (never the kernel's): zoom and pan of each plane, as [zoom, centre x, centre y] (0..1)
  const zoom = { sagittal: [1, 0.5, 0.5], coronal: [1, 0.5, 0.5], axial: [1, 0.5, 0.5] };
  let colours = new Uint8Array(3), shown = new Uint8Array(1);  // per label value: colour, drawn or not

  function labelTables() {  // from _label_colors {value: [r, g, b]} and hidden_labels
    const table = model.get("_label_colors") || {};
    let max = 0;
    for (const k of Object.keys(table)) max = Math.max(max, Number(k));
    colours = new Uint8Array((max + 1) * 3); shown = new Uint8Array(max + 1);
    for (const [k, c] of Object.entries(table)) {
      const l = Number(k);
      colours[l * 3] = c[0]; colours[l * 3 + 1] = c[1]; colours[l * 3 + 2] = c[2]; shown[l] = 1;
    }
    for (const l of model.get("hidden_labels") || []) if (l < shown.length) shown[l] = 0;
    shown[0] = 0;
  }

  // labels travel deflated (zlib): a 256³ label map is ~0.3 MB instead of 16 MB, in messages and in saved state
  async function inflate(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  let loads = 0;
  async function load() {  // false when a newer sample arrived meanwhile
    const mine = ++loads;
    const s = model.get("shape") || [1, 1, 1];
    const n = s[0] * s[1] * s[2];
    let v = bytesOf(model.get("_volume"));
    let l = bytesOf(model.get("_labels"));
    if (l) {
      try {
        l = await inflate(l);
        if (model.get("_label_bits") === 16) l = new Uint16Array(l.buffer, 0, l.byteLength >> 1);
      } catch (e) { l = null; }
    }
    if (mine !== loads) return false;
    shape = s;
    vol = v && v.length === n ? v : null;
    lab = l && l.length === n ? l : null;
    for (const p of PLANES) idx[p] = model.get(p);
    return true;
  }

  function options(sel, values, value) {
    const key = JSON.stringify(values);
    if (sel.dataset.key !== key) {
      sel.innerHTML = "";
      for (const v of values) { const o = el("option", "", sel, v); o.value = v; }
      sel.dataset.key = key;
    }
    sel.value = value;
  }

  function lutFor() {
    const cm = (model.get("_luts") || {})[model.get("cmap")] || [];
    const [qlo, qhi] = model.get("_qrange");
    const [lo, hi] = model.get("window");
    const table = new Uint8Array(256 * 3);
    for (let q = 0; q < 256; q++) {
      const v = qlo + (q * (qhi - qlo)) / 255;
      let t = hi > lo ? (v - lo) / (hi - lo) : 0;
      t = Math.max(0, Math.min(1, t));
      const i = Math.round(t * 255) * 3;
      table[q * 3] = cm[i] || 0; table[q * 3 + 1] = cm[i + 1] || 0; table[q * 3 + 2] = cm[i + 2] || 0;
    }
    return table;
  }

  // in-plane axes: [horizontal (increasing to the right), vertical (increasing upwards)]
  function inPlane(p) { return PLANES.includes(p) ? [0, 1, 2].filter((a) => a !== AXIS[p]) : [0, 1]; }
  const strides = () => [shape[1] * shape[2], shape[2], 1];

  function displaySize(p) {
    const [a, b] = inPlane(p);
    const sp = model.get("spacing");
    const w = shape[a] * sp[a], h = shape[b] * sp[b];
    const size = model.get("size");
    const scale = size / Math.max(w, h);
    return [Math.max(1, Math.round(w * scale)), Math.max(1, Math.round(h * scale))];
  }

  function viewport(p) {  // the source rectangle [x, y, w, h] of plane p shown in its canvas
    const [a, b] = inPlane(p);
    const W = shape[a], H = shape[b];
    const [z, cx, cy] = zoom[p];
    const sw = W / z, sh = H / z;
    const sx = Math.max(0, Math.min(W - sw, cx * W - sw / 2)), sy = Math.max(0, Math.min(H - sh, cy * H - sh / 2));
    return [sx, sy, sw, sh];
  }

  function draw(p, table) {
    const v = views[p];
    if (!vol) { v.box.style.display = "none"; return; }
    v.box.style.display = (shape[2] === 1 && p !== "axial") ? "none" : "";
    const [a, b] = inPlane(p);
    const W = shape[a], H = shape[b];
    const st = strides();
    const base = idx[p] * st[AXIS[p]];
    const off = v.off;
    if (off.width !== W || off.height !== H) { off.width = W; off.height = H; }
    const octx = off.getContext("2d");
    const img = octx.createImageData(W, H);
    const px = img.data;
    const alpha = model.get("opacity");
    const nl = shown.length;
    const sa = st[a], sb = st[b];
    for (let r = 0; r < H; r++) {
      const j = H - 1 - r;
      let o = r * W * 4;
      for (let i = 0; i < W; i++, o += 4) {
        const k = base + i * sa + j * sb;
        const q = vol[k] * 3;
        let R = table[q], G = table[q + 1], B = table[q + 2];
        if (lab && alpha > 0) {
          const l = lab[k];
          if (l > 0 && l < nl && shown[l]) {
            const c = l * 3;
            R = (1 - alpha) * R + alpha * colours[c]; G = (1 - alpha) * G + alpha * colours[c + 1];
            B = (1 - alpha) * B + alpha * colours[c + 2];
          }
        }
        px[o] = R; px[o + 1] = G; px[o + 2] = B; px[o + 3] = 255;
      }
    }
    octx.putImageData(img, 0, 0);
    const [dw, dh] = displaySize(p);
    const c = v.canvas;
    if (c.width !== dw || c.height !== dh) { c.width = dw; c.height = dh; }
    const ctx = c.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    const [sx, sy, sw, sh] = viewport(p);
    if (zoom[p][0] > 1) { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, dw, dh); }
    ctx.drawImage(off, sx, sy, sw, sh, 0, 0, dw, dh);
    if (model.get("crosshair") && shape[2] > 1) {
      const x = ((idx[PLANES[2 - a]] + 0.5 - sx) / sw) * dw;  // plane cutting axis a
      const y = ((H - idx[PLANES[2 - b]] - 0.5 - sy) / sh) * dh;
      ctx.strokeStyle = "rgba(255, 220, 0, 0.8)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(Math.round(x) + 0.5, 0); ctx.lineTo(Math.round(x) + 0.5, dh);
      ctx.moveTo(0, Math.round(y) + 0.5); ctx.lineTo(dw, Math.round(y) + 0.5);
      ctx.stroke();
    }
    const codes = model.get("axcodes");
    v.letters.right.textContent = codes[a]; v.letters.left.textContent = OPP[codes[a]];
    v.letters.top.textContent = codes[b]; v.letters.bottom.textContent = OPP[codes[b]];
    v.frame.style.width = dw + "px"; v.frame.style.height = dh + "px";
    v.slider.max = Math.max(0, shape[AXIS[p]] - 1);
    v.slider.value = idx[p];
    v.slider.style.width = Math.max(dw, 120) + "px";
    v.out.textContent = `${p} ${idx[p]}/${Math.max(0, shape[AXIS[p]] - 1)}`;
    c.dataset.drawn = String(Number(c.dataset.drawn) + 1);
  }

  function labelName(l) {
    const names = model.get("label_names") || {};
    return names[String(l)] !== undefined ? names[String(l)] : "label " + l;
  }

  function updateReadout() {
    if (!vol) { readout.textContent = ""; return; }
    const k = idx.sagittal * shape[1] * shape[2] + idx.coronal * shape[2] + idx.axial;
    const [qlo, qhi] = model.get("_qrange");
    const value = qlo + (vol[k] * (qhi - qlo)) / 255;
    let text = `voxel (${idx.sagittal}, ${idx.coronal}, ${idx.axial})  value \u2248 ${value.toPrecision(4)}`;
    if (lab) { const l = lab[k]; text += `  \u00b7  ${labelName(l)} (${l})`; }
    const t = model.get("_to_stored");
    if (t && t.perm) {  // display voxel -> stored voxel (of the full array) -> world mm through the affine
      const d = [idx.sagittal, idx.coronal, idx.axial].map((i) => i * (t.dstep || 1));
      const st = [0, 0, 0];
      for (let e = 0; e < 3; e++) {
        const s = t.perm[e];
        st[s] = (t.flip[e] ? t.shape[s] - 1 - d[e] : d[e]) * (t.step || 1);
      }
      text += `  \u00b7  stored (${st[0]}, ${st[1]}, ${st[2]})`;
      const A = t.affine;
      if (A) {
        const w = [0, 1, 2].map((r) => A[r][0] * st[0] + A[r][1] * st[1] + A[r][2] * st[2] + A[r][3]);
        text += `  \u00b7  world (${w.map((x) => x.toFixed(1)).join(", ")}) mm`;
      } else text += `  \u00b7  voxel units (${st.map((x) => x.toFixed(1)).join(", ")})`;
    }
    readout.textContent = text;
  }

  function updateLegend() {
    legend.innerHTML = "";
    if (!lab) return;
    const table = model.get("_label_colors") || {};
    const hidden = new Set(model.get("hidden_labels") || []);
    for (const l of model.get("_label_values") || []) {
      if (l <= 0) continue;
      const item = el("span", "wh-legend-item wirehead-legend-" + l, legend);
      const sw = el("span", "wh-swatch", item);
      const c = table[String(l)] || [0, 0, 0];
      sw.style.background = `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
      el("span", "", item, `${l} ${labelName(l)}`);
      item.title = hidden.has(l) ? "hidden: click to show" : "click to hide";
      if (hidden.has(l)) item.classList.add("wh-hidden");
      item.addEventListener("click", () => {  // a display choice: works without a kernel too
        const now = new Set(model.get("hidden_labels") || []);
        if (now.has(l)) now.delete(l); else now.add(l);
        model.set("hidden_labels", [...now].sort((x, y) => x - y));
        labelTables(); updateLegend(); drawAll(); model.save_changes();
      });
    }
  }

  function drawThumbs() {  // tiles are redrawn in place as they come, so a click never lands on a removed one
    const n = model.get("_thumb_n");
    const data = bytesOf(model.get("_thumbs"));
    grid.style.display = model.get("thumbnails") && data ? "" : "none";
    if (!model.get("thumbnails") || !data) { grid.innerHTML = ""; return; }
    const T = Math.round(Math.sqrt(data.length / Math.max(1, n)));
    if (grid.children.length !== n || (n && grid.children[0].width !== T)) {
      grid.innerHTML = "";
      for (let i = 0; i < n; i++) {
        const c = el("canvas", "wh-thumb wirehead-thumb-" + i, grid);
        c.width = T; c.height = T; c.title = "sample " + i;
        if (!offline) c.addEventListener("click", () => save({ sample: i }));  // opening a sample needs the kernel
        else c.style.cursor = "default";
      }
    }
    for (let i = 0; i < n; i++) {
      const c = grid.children[i];
      c.classList.toggle("wh-current", i === model.get("sample"));
      const ctx = c.getContext("2d");
      const img = ctx.createImageData(T, T);
      for (let k = 0; k < T * T; k++) {
        const g = data[i * T * T + k];
        img.data[4 * k] = g; img.data[4 * k + 1] = g; img.data[4 * k + 2] = g; img.data[4 * k + 3] = 255;
      }
      ctx.putImageData(img, 0, 0);
    }
  }

  function drawAll() {
    const table = lutFor();
    for (const p of PLANES) draw(p, table);
    updateReadout();
  }

  function syncControls() {
    const n = model.get("n_samples");
    sample.min = 0; sample.max = Math.max(0, n - 1); sample.value = model.get("sample");
    sampleOut.textContent = sampleText(model.get("sample"), n);
    sample.disabled = n <= 1 || offline;
    // one sample of arrays: nothing to choose and no count to give (a generation of one still says 1/1)
    sampleWrap.style.display = n <= 1 && !model.get("_has_reader") ? "none" : "";
    for (const s of [kindSel, labelSel, channel]) s.disabled = offline;
    if (offline) sampleWrap.title = "this page holds the sample shown when the notebook was saved";
    thumbWrap.style.display = offline ? "none" : "";
    newest.style.display = model.get("_has_reader") && !offline ? "" : "none";
    info.textContent = model.get("info");
    message.textContent = model.get("message");
    message.style.display = model.get("message") ? "" : "none";
    options(kindSel, model.get("kinds"), model.get("kind"));
    options(labelSel, ["(none)", ...model.get("kinds")], model.get("label_kind"));
    options(cmapSel, Object.keys(model.get("_luts") || {}), model.get("cmap"));
    const [lo, hi] = model.get("window");
    const [qlo, qhi] = model.get("_qrange");
    const step = (qhi - qlo) / 255 || 1;
    for (const inp of [wlo, whi]) inp.step = step.toPrecision(2);
    if (document.activeElement !== wlo) wlo.value = Number(lo.toPrecision(4));
    if (document.activeElement !== whi) whi.value = Number(hi.toPrecision(4));
    opacity.value = model.get("opacity");
    const nc = model.get("n_channels");
    chWrap.style.display = nc > 1 ? "" : "none";
    channel.max = Math.max(0, nc - 1); channel.value = model.get("channel");
    chOut.textContent = String(model.get("channel"));
    cross.checked = model.get("crosshair");
    radio.checked = Boolean(model.get("radiological"));
    radio.disabled = offline;
    thumbBox.checked = model.get("thumbnails");
    followBox.checked = model.get("follow");
    followWrap.style.display = model.get("_has_reader") && !offline ? "" : "none";
  }

  function save(changes) {
    for (const [k, v] of Object.entries(changes)) model.set(k, v);
    model.save_changes();
  }

  function moveTo(next) {  // next: partial {plane: index}; clipped, drawn at once, then told to the kernel
    const changes = {};
    for (const [p, i] of Object.entries(next)) {
      const v = Math.max(0, Math.min(shape[AXIS[p]] - 1, Math.round(i)));
      if (v !== idx[p]) { idx[p] = v; changes[p] = v; }
    }
    if (Object.keys(changes).length) { drawAll(); save(changes); }
  }

  function clickAt(p, ev) {  // the crosshair to the voxel under the pointer (display terms)
    const [a, b] = inPlane(p);
    const v = views[p];
    const [sx, sy, sw, sh] = viewport(p);
    const r = v.canvas.getBoundingClientRect();
    const i = Math.floor(sx + ((ev.clientX - r.left) / r.width) * sw);
    const j = shape[b] - 1 - Math.floor(sy + ((ev.clientY - r.top) / r.height) * sh);
    moveTo({ [PLANES[2 - a]]: i, [PLANES[2 - b]]: j });
  }

  function startDrag(p, ev, what) {  // window/level (right or shift drag) or pan (middle or ctrl drag)
    const x0 = ev.clientX, y0 = ev.clientY;
    const [lo0, hi0] = model.get("window");
    const [qlo, qhi] = model.get("_qrange");
    const range = (qhi - qlo) || 1;
    const z0 = zoom[p].slice();
    const r = views[p].canvas.getBoundingClientRect();
    let pending = false;
    const onMove = (e) => {
      const dx = e.clientX - x0, dy = e.clientY - y0;
      if (what === "window") {  // right: wider; up: brighter (a lower level), as FSLeyes and niivue
        const width = Math.max(range / 1000, (hi0 - lo0) * Math.exp(dx / 150));
        const level = (lo0 + hi0) / 2 + (dy / 300) * range;
        model.set("window", [level - width / 2, level + width / 2]);
        syncControls();
      } else {
        zoom[p] = [z0[0], z0[1] - dx / r.width / z0[0], z0[2] - dy / r.height / z0[0]];
      }
      if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; drawAll(); }); }
    };
    const onUp = () => {
      window.removeEventListener("mousemove", onMove); window.removeEventListener("mouseup", onUp);
      if (what === "window") model.save_changes();
    };
    window.addEventListener("mousemove", onMove); window.addEventListener("mouseup", onUp);
  }

  function resetView() {
    for (const p of PLANES) zoom[p] = [1, 0.5, 0.5];
    const w = model.get("_default_window");
    if (w && w[1] > w[0]) model.set("window", w.slice());
    syncControls(); drawAll(); model.save_changes();
  }

  for (const p of PLANES) {
    const v = views[p];
    v.slider.addEventListener("input", () => moveTo({ [p]: Number(v.slider.value) }));
    v.canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
    v.canvas.addEventListener("mousedown", (ev) => {
      v.canvas.focus();
      const windowing = ev.button === 2 || (ev.button === 0 && ev.shiftKey);
      const panning = ev.button === 1 || (ev.button === 0 && (ev.ctrlKey || ev.metaKey));
      if (windowing || panning) { ev.preventDefault(); startDrag(p, ev, windowing ? "window" : "pan"); return; }
      if (ev.button === 0) clickAt(p, ev);
    });
    v.canvas.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      if (ev.ctrlKey || ev.metaKey) {  // zoom about the pointer
        const [a, b] = inPlane(p);
        const [sx, sy, sw, sh] = viewport(p);
        const r = v.canvas.getBoundingClientRect();
        const fx = (sx + ((ev.clientX - r.left) / r.width) * sw) / shape[a];
        const fy = (sy + ((ev.clientY - r.top) / r.height) * sh) / shape[b];
        const z = Math.max(1, Math.min(16, zoom[p][0] * (ev.deltaY < 0 ? 1.25 : 0.8)));
        zoom[p] = [z, fx + (zoom[p][1] - fx) * (zoom[p][0] / z), fy + (zoom[p][2] - fy) * (zoom[p][0] / z)];
        drawAll();
      } else moveTo({ [p]: idx[p] + (ev.deltaY < 0 ? 1 : -1) });
    }, { passive: false });
    v.canvas.addEventListener("keydown", (ev) => {
      const [a, b] = inPlane(p);
      const moves = { ArrowLeft: [a, -1], ArrowRight: [a, 1], ArrowUp: [b, 1], ArrowDown: [b, -1],
                      PageUp: [AXIS[p], 1], PageDown: [AXIS[p], -1] };
      const m = moves[ev.key];
      if (!m) return;
      ev.preventDefault();
      const plane = PLANES[2 - m[0]];
      moveTo({ [plane]: idx[plane] + m[1] });
    });
  }
  sample.addEventListener("change", () => save({ sample: Number(sample.value) }));
  sample.addEventListener("input", () => { sampleOut.textContent = sampleText(Number(sample.value), model.get("n_samples")); });
  kindSel.addEventListener("change", () => save({ kind: kindSel.value }));
  labelSel.addEventListener("change", () => save({ label_kind: labelSel.value }));
  cmapSel.addEventListener("change", () => { model.set("cmap", cmapSel.value); drawAll(); model.save_changes(); });
  opacity.addEventListener("input", () => { model.set("opacity", Number(opacity.value)); drawAll(); model.save_changes(); });
  channel.addEventListener("change", () => save({ channel: Number(channel.value) }));
  cross.addEventListener("change", () => { model.set("crosshair", cross.checked); drawAll(); model.save_changes(); });
  const onWindow = () => {
    const lo = Number(wlo.value), hi = Number(whi.value);
    if (Number.isFinite(lo) && Number.isFinite(hi) && hi > lo) { model.set("window", [lo, hi]); drawAll(); model.save_changes(); }
  };
  wlo.addEventListener("change", onWindow); whi.addEventListener("change", onWindow);
  thumbBox.addEventListener("change", () => save({ thumbnails: thumbBox.checked }));
  followBox.addEventListener("change", () => save({ follow: followBox.checked }));
  radio.addEventListener("change", () => save({ radiological: radio.checked }));
  reset.addEventListener("click", resetView);
  newest.addEventListener("click", () => save({ _refresh_clicks: (model.get("_refresh_clicks") || 0) + 1 }));

  const full = async () => { if (await load()) { labelTables(); syncControls(); updateLegend(); drawAll(); drawThumbs(); } };
  const relabel = () => { labelTables(); updateLegend(); drawAll(); };
  const view = () => { syncControls(); drawAll(); };
  const onIndex = () => {
    let moved = false;
    for (const p of PLANES) { if (model.get(p) !== idx[p]) { idx[p] = model.get(p); moved = true; } }
    if (moved) drawAll();
  };
  model.on("change:_version", full);
  for (const k of ["cmap", "opacity", "window", "crosshair", "label_names", "message", "info", "n_samples",
                   "sample", "channel", "n_channels", "size"]) model.on("change:" + k, view);
  model.on("change:label_names", updateLegend);
  model.on("change:hidden_labels", relabel);
  model.on("change:_label_colors", relabel);
  for (const k of ["_thumbs", "_thumb_n", "thumbnails", "sample"]) model.on("change:" + k, drawThumbs);
  for (const p of PLANES) model.on("change:" + p, onIndex);
  full();
  return () => {
    model.off("change:_version", full);
  };
}

export default { render };
