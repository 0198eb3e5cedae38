"use strict";
/* The analysis plots (SVG, no library): comparison bars with intervals, co-occurring pairs,
   label quality. Loaded before app.js, whose helpers (svg, el, fmt, pct) they call.
   Every plot sizes its margins from its own text, so no label is cut off at an edge. */

const PALETTE = ["#2f6fb5", "#d0743c", "#2e8b57", "#8a5cc2", "#b8860b", "#c0392b",
  "#17a2b8", "#e377c2", "#7f7f7f", "#6b8e23", "#1f3f7a", "#8c564b"];

/* The colour of group j: twelve distinct colours, then hues a golden angle apart with the
   lightness stepped, so that no two of the groups of one chart share a colour (the six
   colours used to repeat from the seventh group on). */
function groupColour(j) {
  if (j < PALETTE.length) return PALETTE[j];
  const k = j - PALETTE.length;
  return `hsl(${Math.round((110 + k * 137.508) % 360)}, ${55 + (k % 3) * 15}%, ${40 + (Math.floor(k / 3) % 4) * 10}%)`;
}
const CHAR_W = 6.1; // px per character of 10px axis text (a generous estimate)

function textWidth(s) { return String(s).length * CHAR_W; }
function clip(s, n) { s = String(s); return s.length > n ? s.slice(0, n - 1) + "…" : s; }

/* `v` rounded up to a multiple of a round step, so that quarter ticks read 0, 20%, 40%, ... */
function niceMax(v) {
  const step = [0.01, 0.02, 0.04, 0.05, 0.1, 0.2, 0.25].find((s) => v <= 4 * s) || 0.25;
  return Math.min(1, Math.ceil(v / step - 1e-9) * step);
}

/* x-axis ticks at 0, ¼, ½, ¾ and 1 of `max`, as percentages or plain numbers */
function xTicks(s, x, max, y0, y1, asPct) {
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4;
    s.appendChild(svg("line", { x1: x(v), x2: x(v), y1: y0, y2: y1, class: "gridline" }));
    s.appendChild(svg("text", { x: x(v), y: y1 + 12, class: "axis", "text-anchor": "middle" }, asPct ? pct(v) : fmt(Math.round(v * 100) / 100)));
  }
}

/* Horizontal bars with intervals: rows of {label, note, groups: [{name, value, lo, hi, n}]}.
   A group with no pieces of the cluster's kind (n = 0) has no rate: it is written as such,
   not drawn as a [0, 1] interval. */
function intervalBars(rows, groupNames, xlabel) {
  const rowH = 16 * Math.max(1, groupNames.length) + 10, T = 24 + 16 * Math.floor((groupNames.length - 1) / 4);
  const labels = rows.map((r) => clip(r.label, 48));
  const L = 12 + Math.max(60, ...labels.map(textWidth));
  const R = 12 + Math.max(40, ...rows.map((r) => textWidth(r.note || "")));
  const plotW = 520, W = L + plotW + R;
  const H = T + rows.length * rowH + 40;
  let max = 0;
  rows.forEach((r) => r.groups.forEach((g) => { if (g.n !== 0) max = Math.max(max, g.hi ?? g.value ?? 0, g.value ?? 0); }));
  max = niceMax(Math.min(1, max || 1));
  const x = (v) => L + plotW * Math.min(v, max) / max;
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot fit", role: "img", width: W, height: H });
  groupNames.forEach((name, j) => {  // the legend, four groups a line
    const lx = L + (j % 4) * (plotW / 4), ly = 4 + 16 * Math.floor(j / 4);
    s.appendChild(svg("rect", { x: lx, y: ly, width: 10, height: 10, fill: groupColour(j) }));
    s.appendChild(svg("text", { x: lx + 14, y: ly + 9, class: "axis" }, clip(name, Math.floor(plotW / 4 / CHAR_W) - 3)));
  });
  xTicks(s, x, max, T, H - 34, true);
  rows.forEach((r, i) => {
    const y0 = T + i * rowH;
    const t = svg("text", { x: L - 6, y: y0 + rowH / 2 + 3, class: "axis", "text-anchor": "end" }, labels[i]);
    t.appendChild(svg("title", {}, r.label));
    s.appendChild(t);
    r.groups.forEach((g, j) => {
      const y = y0 + 4 + j * 16;
      if (g.n === 0) {
        s.appendChild(svg("text", { x: L + 4, y: y + 9, class: "axis nodata" }, `${g.name}: no pieces of this kind`));
        return;
      }
      const v = g.value ?? 0;
      const bar = svg("rect", { x: L, y: y, width: Math.max(0, x(v) - L), height: 11, fill: groupColour(j), opacity: 0.8 });
      bar.appendChild(svg("title", {}, `${g.name}: ${pct(v)}` + (g.lo !== undefined && g.lo !== null ? ` [${pct(g.lo)}, ${pct(g.hi)}]` : "") + (g.n ? ` of ${fmt(g.n)}` : "")));
      s.appendChild(bar);
      if (g.lo !== undefined && g.lo !== null && g.hi !== null && g.hi !== undefined) {
        s.appendChild(svg("line", { x1: x(g.lo), x2: x(g.hi), y1: y + 5.5, y2: y + 5.5, class: "whisker" }));
        s.appendChild(svg("line", { x1: x(g.lo), x2: x(g.lo), y1: y + 1, y2: y + 10, class: "whisker" }));
        s.appendChild(svg("line", { x1: x(g.hi), x2: x(g.hi), y1: y + 1, y2: y + 10, class: "whisker" }));
      }
    });
    if (r.note) s.appendChild(svg("text", { x: L + plotW + 6, y: y0 + rowH / 2 + 3, class: "axis" }, r.note));
  });
  s.appendChild(svg("text", { x: L + plotW / 2, y: H - 6, class: "axis label", "text-anchor": "middle" }, xlabel));
  return s;
}

/* Horizontal bars of one value each: rows of {label, value, note, colour, title} on [lo, hi]. */
function valueBars(rows, opts) {
  const labels = rows.map((r) => clip(r.label, 72));
  const L = 12 + Math.max(60, ...labels.map(textWidth));
  const R = 12 + Math.max(30, ...rows.map((r) => textWidth(r.note || "")));
  const plotW = 420, W = L + plotW + R, rowH = 18, T = 8, H = T + rows.length * rowH + 40;
  const lo = opts.lo ?? 0, hi = opts.hi ?? Math.max(1e-9, ...rows.map((r) => r.value));
  const x = (v) => L + plotW * (Math.max(lo, Math.min(hi, v)) - lo) / (hi - lo);
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot fit", role: "img", width: W, height: H });
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    s.appendChild(svg("line", { x1: x(v), x2: x(v), y1: T, y2: H - 34, class: "gridline" }));
    s.appendChild(svg("text", { x: x(v), y: H - 22, class: "axis", "text-anchor": "middle" }, fmt(Math.round(v * 100) / 100)));
  }
  const zero = x(Math.max(lo, 0));
  rows.forEach((r, i) => {
    const y = T + i * rowH;
    const t = svg("text", { x: L - 6, y: y + 12, class: "axis", "text-anchor": "end" }, labels[i]);
    t.appendChild(svg("title", {}, r.label));
    s.appendChild(t);
    const a = Math.min(zero, x(r.value)), b = Math.max(zero, x(r.value));
    const bar = svg("rect", { x: a, y: y + 3, width: Math.max(1, b - a), height: 12, fill: r.colour || PALETTE[0], opacity: 0.85 });
    bar.appendChild(svg("title", {}, r.title || `${r.label}: ${fmt(r.value)}`));
    s.appendChild(bar);
    if (r.note) s.appendChild(svg("text", { x: L + plotW + 6, y: y + 12, class: "axis" }, r.note));
  });
  s.appendChild(svg("text", { x: L + plotW / 2, y: H - 6, class: "axis label", "text-anchor": "middle" }, opts.xlabel));
  return s;
}

/* A scatter on [0, 1] × [0, 1]: points of {x, y, label, colour}. */
function scatter01(points, opts) {
  const L = 48, B = 40, T = 10, R = 16, W = 460, H = 360, pw = W - L - R, ph = H - T - B;
  const px = (v) => L + pw * v, py = (v) => T + ph * (1 - v);
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img" });
  for (let i = 0; i <= 4; i++) {
    const v = i / 4;
    s.appendChild(svg("line", { x1: px(v), x2: px(v), y1: T, y2: T + ph, class: "gridline" }));
    s.appendChild(svg("line", { x1: L, x2: L + pw, y1: py(v), y2: py(v), class: "gridline" }));
    s.appendChild(svg("text", { x: px(v), y: T + ph + 14, class: "axis", "text-anchor": "middle" }, fmt(v)));
    s.appendChild(svg("text", { x: L - 4, y: py(v) + 3, class: "axis", "text-anchor": "end" }, fmt(v)));
  }
  points.forEach((p) => {
    const c = svg("circle", { cx: px(p.x), cy: py(p.y), r: 4.5, fill: p.colour || PALETTE[0], opacity: 0.75, class: "point" });
    c.appendChild(svg("title", {}, `${p.label}: ${opts.xlabel} ${fmt(p.x)}, ${opts.ylabel} ${fmt(p.y)}`));
    s.appendChild(c);
  });
  s.appendChild(svg("text", { x: L + pw / 2, y: H - 6, class: "axis label", "text-anchor": "middle" }, opts.xlabel));
  s.appendChild(svg("text", { x: 12, y: T + ph / 2, class: "axis label", "text-anchor": "middle", transform: `rotate(-90 12 ${T + ph / 2})` }, opts.ylabel));
  return s;
}

/* analysis_cooccurrence: the strongest pairs of each level by NPMI (−1..1), lift as a note. */
function cooccurrencePlots(rows, byId) {
  const out = [];
  for (const level of [...new Set(rows.map((r) => r.level))]) {
    const top = rows.filter((r) => r.level === level && typeof r.npmi === "number" && byId.has(r.cluster_a) && byId.has(r.cluster_b))
      .sort((a, b) => b.npmi - a.npmi).slice(0, 20);
    if (!top.length) continue;
    const bars = top.map((r) => ({
      label: `${clip(byId.get(r.cluster_a).label, 34)} + ${clip(byId.get(r.cluster_b).label, 34)}`, value: r.npmi,
      note: `lift ×${fmt(Math.round(r.lift * 10) / 10)}, ${fmt(r.together)} together`,
      colour: r.q_value !== null && r.q_value < 0.05 ? PALETTE[0] : "#9aa3b2",
      title: `NPMI ${fmt(r.npmi)}; ${fmt(r.together)} of ${fmt(r.units)} ${level}s have both; q ${fmt(r.q_value)}`,
    }));
    out.push(section(`Strongest co-occurring pairs within ${level}s (NPMI; blue: significant after Benjamini–Hochberg)`,
      valueBars(bars, { lo: bars.some((b) => b.value < 0) ? -1 : 0, hi: 1, xlabel: "normalised PMI (0: independent, 1: always together)" })));
  }
  return out;
}

/* analysis_label_quality: precision against recall of each scored label, F1 ranked. */
function labelQualityPlots(rows, byId) {
  const ok = rows.filter((r) => typeof r.precision === "number" && typeof r.recall === "number");
  if (!ok.length) return [];
  const colour = { user: "#2f6fb5", thought: "#8a5cc2", response: "#2e8b57" };
  const label = (r) => (byId.has(r.cluster_id) ? byId.get(r.cluster_id).label : null) || r.label || String(r.cluster_id);
  const points = ok.map((r) => ({ x: r.recall, y: r.precision, label: label(r), colour: colour[r.kind] }));
  const worst = [...ok].sort((a, b) => (a.f1 ?? 0) - (b.f1 ?? 0)).slice(0, 20)
    .map((r) => ({ label: clip(label(r), 48), value: r.f1 ?? 0, note: `P ${fmt(Math.round(r.precision * 100) / 100)} · R ${fmt(Math.round(r.recall * 100) / 100)}`, colour: colour[r.kind] }));
  const failed = rows.length - ok.length;
  return [section(`How well each label picks out its cluster's members (${ok.length} labels` + (failed ? `, ${failed} not scored` : "") + ")",
    el("figure", null, scatter01(points, { xlabel: "recall", ylabel: "precision" }),
      el("figcaption", null, "each dot a label; top right is best; colour: kind")),
    el("figure", null, valueBars(worst, { lo: 0, hi: 1, xlabel: "F1 (worst first)" }), el("figcaption", null, "the weakest labels")))];
}
