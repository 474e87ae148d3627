// wirehead offline widgets: draws wirehead's widget outputs in an HTML export of a notebook saved WITH widget state
// (nbconvert --execute, nbconvert --to notebook --execute, JupyterLab "Save Widget State"), from the state stored in
// the page: no kernel, no network, no @jupyter-widgets/html-manager from a CDN.
// Each wirehead widget output is followed by a tiny text/html output holding this script and the widget's model id.
// Inline, while the page is parsed, it claims that widget's view (so nbconvert's CDN loader, when it is reachable,
// leaves it alone: the page looks the same online and offline); once the page is parsed it builds the widget from
// the stored state: anywidget models with their own module (_esm, e.g. the SliceViewer's viewer.js), the basic
// ipywidgets controls the dashboard is made of (boxes, HTML, label, progress bar, image) as static copies.
// In JupyterLab, Notebook and VS Code there is no stored-state view tag in the page, so it does nothing.
(function (modelId) {
  "use strict";
  const VIEW = "application/vnd.jupyter.widget-view+json";
  const CLAIMED = "application/vnd.wirehead.widget-view+json";
  const STATE = "application/vnd.jupyter.widget-state+json";
  const W = (window.__wireheadOffline = window.__wireheadOffline || { pending: [], css: {} });

  for (const tag of document.querySelectorAll('script[type="' + VIEW + '"]')) {
    let id = null;
    try { id = JSON.parse(tag.textContent).model_id; } catch (e) { continue; }
    if (id === modelId) { tag.type = CLAIMED; W.pending.push({ tag, id }); }
  }

  function bytes(data, encoding) {
    if (encoding === "hex") {
      const u = new Uint8Array(data.length / 2);
      for (let i = 0; i < u.length; i++) u[i] = parseInt(data.substr(2 * i, 2), 16);
      return u;
    }
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(data || "");
    const s = atob(data || "");
    const u = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
    return u;
  }

  function modelOf(all, ref) {
    const id = String(ref).replace(/^IPY_MODEL_/, "");
    const m = all[id];
    if (!m) return null;
    const st = JSON.parse(JSON.stringify(m.state || {}));
    for (const b of m.buffers || []) {
      let o = st;
      for (let i = 0; i < b.path.length - 1; i++) o = o[b.path[i]] = o[b.path[i]] || {};
      o[b.path[b.path.length - 1]] = new DataView(bytes(b.data, b.encoding).buffer);
    }
    const handlers = {};
    const fire = (e) => (handlers[e] || []).slice().forEach((f) => f());
    return {
      id, name: m.model_name || st._model_name, module: m.model_module || st._model_module,
      get: (k) => st[k],
      set: (k, v) => { st[k] = v; fire("change:" + k); },
      on: (e, f) => { (handlers[e] = handlers[e] || []).push(f); },
      off: (e, f) => { handlers[e] = e && f ? (handlers[e] || []).filter((g) => g !== f) : []; },
      save_changes: () => {}, send: () => {}, widget_manager: {},
      offline: true,  // no kernel behind this model (wirehead's modules hide what would need one)
    };
  }

  function node(tag, parent, cls) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (parent) parent.appendChild(e);
    return e;
  }

  async function anywidget(m, host) {
    const css = m.get("_css");
    const key = m.get("_anywidget_id") || m.id;
    if (css && !W.css[key]) { W.css[key] = true; node("style", document.head).textContent = css; }
    const src = m.get("_esm") || "";
    let mod;
    const url = URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
    try {
      mod = await import(url);
    } catch (e) {  // pages where a blob: module cannot be imported: the module as a function body
      mod = { default: new Function(src.replace(/export\s+default\s+/, "return ")).call(null) };
    } finally {
      URL.revokeObjectURL(url);
    }
    let w = mod.default || mod;
    if (typeof w === "function") w = await w();
    if (w.initialize) await w.initialize({ model: m });
    const el = node("div", host);
    if (w.render) await w.render({ model: m, el });
  }

  const BAR = { success: "#4caf50", info: "#2196f3", warning: "#ff9800", danger: "#f44336", "": "#2196f3" };

  async function control(all, m, host) {
    const name = m.name || "";
    const layout = modelOf(all, m.get("layout") || "");
    if (layout) {
      for (const k of ["width", "height", "display", "visibility", "margin", "padding"]) {
        if (layout.get(k)) host.style[k] = layout.get(k);
      }
    }
    const desc = m.get("description");
    const label = () => { if (desc) node("span", host, "wh-offline-description").textContent = desc + " "; };
    if (/BoxModel$/.test(name)) {
      host.style.display = host.style.display || "flex";
      host.style.flexDirection = name === "HBoxModel" ? "row" : "column";
      host.style.gap = "4px";
      if (name === "HBoxModel") host.style.alignItems = "center";
      for (const ref of m.get("children") || []) await show(all, ref, node("div", host));
    } else if (name === "HTMLModel" || name === "HTMLMathModel") {
      label();
      node("div", host).innerHTML = m.get("value") || "";
    } else if (name === "LabelModel") {
      node("span", host).textContent = m.get("value") || "";
    } else if (/ProgressModel$/.test(name)) {
      host.style.display = "flex"; host.style.alignItems = "center"; host.style.gap = "6px";
      label();
      const outer = node("div", host, "wh-offline-progress");
      Object.assign(outer.style, { flex: "1", minWidth: "120px", height: "14px", background: "#e0e0e0" });
      const lo = m.get("min") || 0, hi = m.get("max") || 0, v = m.get("value") || 0;
      const inner = node("div", outer);
      inner.style.height = "100%";
      inner.style.width = (hi > lo ? Math.max(0, Math.min(1, (v - lo) / (hi - lo))) * 100 : 0) + "%";
      inner.style.background = BAR[m.get("bar_style") || ""] || BAR[""];
    } else if (name === "ImageModel") {
      const v = m.get("value");
      const img = node("img", host);
      if (v && v.byteLength) img.src = URL.createObjectURL(new Blob([v], { type: "image/" + (m.get("format") || "png") }));
      if (m.get("width")) img.style.width = /^\d+$/.test(m.get("width")) ? m.get("width") + "px" : m.get("width");
    } else if (name === "ButtonModel") {
      const b = node("button", host);
      b.textContent = desc || "";
      b.disabled = true;
    } else if (m.get("value") !== undefined) {  // other controls: their value, read-only
      label();
      node("span", host).textContent = String(m.get("value"));
    }
  }

  async function show(all, ref, host) {
    const m = modelOf(all, ref);
    if (!m) { host.textContent = "(this widget's state was not saved in the notebook)"; return; }
    for (const c of m.get("_dom_classes") || []) host.classList.add(c);
    if (m.module === "anywidget") await anywidget(m, host);
    else await control(all, m, host);
  }

  function start() {
    const tag = document.querySelector('script[type="' + STATE + '"]');
    let all = {};
    try { all = tag ? JSON.parse(tag.textContent).state || {} : {}; } catch (e) { all = {}; }
    for (const { tag: view, id } of W.pending.splice(0)) {
      if (!all[id]) { view.type = VIEW; continue; }  // not from stored state (e.g. a live page): give it back
      const host = document.createElement("div");
      host.className = "wirehead-offline";
      host.style.fontFamily = "var(--jp-ui-font-family, system-ui, sans-serif)";
      host.style.fontSize = "var(--jp-ui-font-size1, 13px)";
      host.style.color = "var(--jp-ui-font-color1, #222)";
      view.parentNode.insertBefore(host, view);
      show(all, id, host).catch((e) => {
        node("pre", host).textContent = "wirehead: this widget could not be drawn from the saved state: " + e;
      });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})
