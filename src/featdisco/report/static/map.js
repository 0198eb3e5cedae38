/* featdisco report: the map — a UMAP layout of the run's features (data/map.js), drawn on a
 * canvas, with cluster labels placed over it as datamapplot places them: the largest
 * clusters first, each label only where it overlaps none already placed, so zooming in
 * reveals the smaller clusters' labels. Wheel or buttons zoom, dragging pans, the kind
 * boxes toggle kinds, hovering names a cluster, a click opens it. Private clusters are
 * left out unless "Show private clusters" is on; hidden ones are not in the data.
 *
 * Loaded before app.js; uses its helpers (el, show, load, clusterIndex, S, ...) only when
 * the view runs. Labels are untrusted text: they become text nodes of links built from
 * numbers, never HTML.
 */
"use strict";

const MAP_HUE = { user: 212, thought: 275, response: 148 };
const MAP_MAX_LABELS = 160;

function mapColour(c, light) {
  const h = MAP_HUE[c.kind] + ((c.id * 47) % 70) - 35, s = 50 + ((c.id * 13) % 30);
  return `hsl(${h}, ${s}%, ${light ?? 40 + ((c.id * 7) % 20)}%)`;
}

function wrapLabel(text, width) {
  const words = String(text || "").split(/\s+/).filter(Boolean), lines = [];
  let line = "";
  for (const w of words) {
    if (line && (line + " " + w).length > width) { lines.push(line); line = w; } else line = line ? line + " " + w : w;
  }
  if (line) lines.push(line);
  return lines.slice(0, 3);
}

async function viewMap() {
  const [m, byId] = await Promise.all([tryLoad("map"), clusterIndex()]);
  if (!m || !m.c || !m.c.length) {
    return show(el("h1", null, "Map of clusters"), empty("This report has no map: the run has no cluster centroids."));
  }
  const kinds = KINDS.filter((k) => S.ov.kinds[k]);
  const on = Object.fromEntries(kinds.map((k) => [k, true]));
  const n = m.c.length, G = m.grid;
  // Points by cluster (features only; a cluster with none drawn shows its centroid).
  const members = new Map();
  for (let i = m.centroids; i < n; i++) {
    const cid = m.c[i];
    if (!members.has(cid)) members.set(cid, []);
    members.get(cid).push(i);
  }
  for (let i = 0; i < m.centroids; i++) if (!members.has(m.c[i])) members.set(m.c[i], [i]);
  const clusters = [...members.keys()].map((id) => byId.get(id)).filter(Boolean);
  const maxSize = Math.max(1, ...clusters.map((c) => c.size));
  const visible = (c) => c && on[c.kind] && (S.showPrivate || !c.private);

  const W = Math.max(480, main.clientWidth || 1000), H = Math.max(420, Math.min(760, window.innerHeight - 230));
  const dpr = window.devicePixelRatio || 1;
  const canvas = el("canvas", { class: "map", width: Math.round(W * dpr), height: Math.round(H * dpr),
    "aria-label": "map of clusters: each dot a feature, placed by UMAP" });
  canvas.style.width = W + "px"; canvas.style.height = H + "px";
  const layer = el("div", { class: "maplabels" });
  const box = el("div", { class: "mapbox" }, canvas, layer);
  box.style.width = W + "px"; box.style.height = H + "px";
  const tip = document.getElementById("tip");
  const pad = 28, side = Math.min(W, H) - 2 * pad;
  const view = { k: 1, tx: (W - side) / 2, ty: (H - side) / 2 };
  const sx = (gx) => view.tx + (gx / G) * side * view.k, sy = (gy) => view.ty + (1 - gy / G) * side * view.k;
  let hover = null, frame = 0, relabel = true;
  // dots as big as the map has room for: a few hundred points are drawn large, 20k small
  const dot = Math.max(2, Math.min(7, 0.16 * Math.sqrt((W * H) / Math.max(1, n))));

  function draw() {
    frame = 0;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    const r = Math.min(8, dot * Math.pow(view.k, 0.4));
    const dots = (ids, radius) => {  // one path per cluster: thousands of arcs stay cheap
      ctx.beginPath();
      for (const i of ids) { const x = sx(m.x[i]), y = sy(m.y[i]); ctx.moveTo(x + radius, y); ctx.arc(x, y, radius, 0, 2 * Math.PI); }
      ctx.fill();
    };
    for (const c of clusters) {
      if (!visible(c)) continue;
      ctx.fillStyle = mapColour(c);
      ctx.globalAlpha = hover && hover !== c ? 0.25 : 0.7;
      dots(members.get(c.id), r / 2);
    }
    if (hover && visible(hover)) {
      ctx.globalAlpha = 1; ctx.fillStyle = mapColour(hover, 30);
      dots(members.get(hover.id), r * 0.8);
    }
    ctx.globalAlpha = 1;
    // labels are placed again only when the view changes: a hover repaints dots alone, so
    // the link under the pointer is never swapped for a new one between press and release
    if (relabel) placeLabels();
    relabel = false;
  }
  function redraw(moved) { relabel = relabel || Boolean(moved); if (!frame) frame = requestAnimationFrame(draw); }

  // Largest first; a label is placed only where it overlaps no placed one (datamapplot's rule).
  function placeLabels() {
    const placed = [], nodes = [];
    const order = clusters.filter((c) => visible(c) && c.x !== null && c.x !== undefined).sort((a, b) => b.size - a.size);
    for (const c of order) {
      if (nodes.length >= MAP_MAX_LABELS) break;
      const x = sx(c.x * G), y = sy(c.y * G);
      if (x < 0 || y < 0 || x > W || y > H) continue;
      const fs = Math.round(11 + 9 * Math.sqrt(c.size / maxSize));
      const lines = wrapLabel(c.label || `cluster ${c.id}`, 22);
      const w = Math.max(...lines.map((l) => l.length)) * fs * 0.56 + 6, h = lines.length * fs * 1.15 + 4;
      const b = { l: x - w / 2, r: x + w / 2, t: y - h / 2, b: y + h / 2 };
      if (b.l < 0 || b.r > W || b.t < 0 || b.b > H) continue;
      if (placed.some((p) => b.l < p.r && b.r > p.l && b.t < p.b && b.b > p.t)) continue;
      placed.push(b);
      const a = el("a", { href: "#/c/" + c.id, class: "maplabel", "data-id": c.id, draggable: "false" },
        lines.flatMap((l, i) => (i ? [el("br"), l] : [l])));
      a.style.left = b.l + "px"; a.style.top = b.t + "px"; a.style.width = w + "px";
      a.style.fontSize = fs + "px"; a.style.color = mapColour(c, 24);
      a.addEventListener("mouseenter", (ev) => { hover = c; tipFor(c, ev); redraw(); });
      a.addEventListener("mouseleave", () => { hover = null; tip.hidden = true; redraw(); });
      nodes.push(a);
    }
    layer.replaceChildren(...nodes);
  }

  function tipFor(c, ev) {
    tip.replaceChildren(el("strong", null, c.label || "(unnamed)"),
      el("div", null, `${c.kind} · ${fmt(c.size)} features · ${fmt(c.pieces)} pieces · interest ${c.interest ?? "–"}`));
    tip.style.left = ev.pageX + 14 + "px"; tip.style.top = ev.pageY + 14 + "px"; tip.hidden = false;
  }

  function nearest(mx, my) {
    let best = null, bd = 64;  // within 8 px
    for (const c of clusters) {
      if (!visible(c)) continue;
      for (const i of members.get(c.id)) {
        const dx = sx(m.x[i]) - mx, dy = sy(m.y[i]) - my, d = dx * dx + dy * dy;
        if (d < bd) { bd = d; best = c; }
      }
    }
    return best;
  }

  function zoom(f, cx, cy) {
    const k = Math.min(80, Math.max(1, view.k * f));
    f = k / view.k;
    view.tx = cx - (cx - view.tx) * f; view.ty = cy - (cy - view.ty) * f; view.k = k;
    redraw(true);
  }

  let drag = null;
  const local = (ev) => { const b = box.getBoundingClientRect(); return [ev.clientX - b.left, ev.clientY - b.top]; };
  box.addEventListener("wheel", (ev) => { ev.preventDefault(); const [x, y] = local(ev); zoom(Math.exp(-ev.deltaY * 0.0015), x, y); }, { passive: false });
  box.addEventListener("pointerdown", (ev) => { drag = { x: ev.clientX, y: ev.clientY, tx: view.tx, ty: view.ty, moved: false }; });
  window.addEventListener("pointerup", () => { setTimeout(() => { drag = null; }, 0); });
  box.addEventListener("pointermove", (ev) => {
    if (drag && ev.buttons) {
      const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 4) drag.moved = true;
      if (drag.moved) { view.tx = drag.tx + dx; view.ty = drag.ty + dy; tip.hidden = true; redraw(true); return; }
    }
    if (ev.target !== canvas) return;
    const [x, y] = local(ev), c = nearest(x, y);
    canvas.style.cursor = c ? "pointer" : "grab";
    if (c !== hover) { hover = c; redraw(); }
    if (c) tipFor(c, ev); else tip.hidden = true;
  });
  box.addEventListener("mouseleave", () => { tip.hidden = true; if (hover) { hover = null; redraw(); } });
  box.addEventListener("click", (ev) => {
    if (drag && drag.moved) { ev.preventDefault(); return; }  // a pan, not a click
    if (ev.target !== canvas) return;  // a label: its link navigates
    const [x, y] = local(ev), c = nearest(x, y);
    if (c) { tip.hidden = true; location.hash = "#/c/" + c.id; }
  }, true);

  const boxes = kinds.map((k) => {
    const cb = el("input", { type: "checkbox", checked: "", "data-kind": k });
    cb.addEventListener("change", () => { on[k] = cb.checked; redraw(true); });
    return el("label", { class: "legend-item" }, cb, " ", el("span", { class: "dot", style: `background:${KIND_COLOUR[k]}` }), ` ${k}`);
  });
  const button = (text, title, fn) => el("button", { type: "button", class: "mapbtn", title, onclick: fn }, text);
  const hiddenPrivate = clusters.filter((c) => c.private).length;
  show(el("h1", null, "Map of clusters"),
    el("p", { class: "muted" }, `Each dot is a feature, placed by ${m.method === "umap" ? "UMAP" : "PCA"} of its embedding so that similar features lie together; `
      + `colours are clusters (blue user, purple thought, green response), labels sit where a cluster's features are. `
      + `Scroll or use the buttons to zoom (smaller clusters' labels appear), drag to pan, hover to read, click to open.`),
    el("div", { class: "legendbar" }, boxes, " ",
      button("+", "zoom in", () => zoom(1.6, W / 2, H / 2)), button("−", "zoom out", () => zoom(1 / 1.6, W / 2, H / 2)),
      button("reset", "whole map", () => { view.k = 1; view.tx = (W - side) / 2; view.ty = (H - side) / 2; redraw(true); })),
    box,
    el("p", { class: "muted small" }, `${fmt(m.features_drawn)} distinct features drawn, from `
      + (m.sampled < (m.features || 0) ? `a uniform sample of ${fmt(m.sampled)} of the run's ${fmt(m.features)} features (the map lays out at most ${fmt(m.cap)} points)` : `all ${fmt(m.features)} features`)
      + `, and ${fmt(m.centroids)} cluster centroids; layout by ${m.method.toUpperCase()}.`
      + (m.note ? ` ${m.note}.` : "")
      + (hiddenPrivate && !S.showPrivate ? ` ${hiddenPrivate} private cluster${hiddenPrivate > 1 ? "s" : ""} not shown.` : "")));
  draw();
}
