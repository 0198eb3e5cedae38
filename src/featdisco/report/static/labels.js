/* featdisco report: evidence (quotes behind features, scan pages) and the labelling mode.
 *
 * Loaded before app.js and called by it at run time, so app.js's helpers (el, load, show,
 * section, table, intervalBars, ...) exist by then. The same rule holds as in app.js: every
 * string from the data reaches the page as text, never as HTML.
 *
 * Evidence: a verified quote's span is highlighted in the piece's text (a <mark> of the exact
 * characters); a quote the rater gave but that is not in the text is marked "unverified" and
 * never highlighted or shown as evidence.
 *
 * Labelling: on scan and cluster pages each shown piece can be marked right or wrong (the
 * LLM's verdict on it: a hit of the scan, a member of the cluster). Marks are kept in this
 * browser (localStorage, per run) and exported as the CSV `featdisco validate` reads:
 * piece_id,target,label, where label is the truth the mark implies.
 */
"use strict";

/* ---------------------------------------------------------------- highlighting */

/* The text with [start, end) wrapped in <mark>, or the plain text when the span is unusable. */
function markedText(text, start, end) {
  if (typeof start !== "number" || typeof end !== "number" || start < 0 || start >= end || start >= text.length) return [text];
  end = Math.min(end, text.length);
  return [text.slice(0, start), el("mark", { class: "quote" }, text.slice(start, end)), text.slice(end)];
}

/* Evidence rows of one transcript piece, by feature text: [feature, quote, start, end, verified]. */
function pieceEvidence(shard, t, piece) {
  if (!shard || !Object.prototype.hasOwnProperty.call(shard, String(t))) return new Map();
  const byPiece = shard[String(t)], key = piece.turn + ":" + piece.kind;
  const rows = Object.prototype.hasOwnProperty.call(byPiece, key) ? byPiece[key] : [];
  return new Map(rows.map((r) => [r[0], r]));
}

function quoteShard(t) {
  const ev = S.ov.evidence;
  return ev && ev.quotes ? tryLoad("q/" + Math.floor(t / S.ov.shards.t)) : Promise.resolve(null);
}

/* A feature chip; with a verified quote it is a button that highlights the quote in textDiv. */
function featureChip(feature, row, textDiv, text, offset) {
  if (!row || row[1] === null || row[1] === undefined) return el("span", { class: "chip" }, feature);
  const [, quote, start, end, verified] = row;
  if (quote === "") return el("span", { class: "chip", title: "a property of the whole piece: no quote" }, feature);
  if (verified !== true) {
    return el("span", { class: "chip unverified", title: "The rater quoted “" + quote + "”, which is not in the text: not evidence." },
      feature, el("span", { class: "warn" }, "unverified quote"));
  }
  const off = offset || 0;
  if (start - off < 0 || end - off > text.length) {
    return el("span", { class: "chip", title: "“" + quote + "”: outside the excerpt shown; the whole transcript has it" }, feature);
  }
  const chip = el("button", { type: "button", class: "chip quoted", title: "“" + quote + "”: click to highlight it in the text" }, feature);
  chip.addEventListener("click", () => {
    const on = !chip.classList.contains("on");
    const box = chip.closest(".turn, .piece");
    if (box) box.querySelectorAll(".chip.quoted.on").forEach((c) => c.classList.remove("on"));
    textDiv.replaceChildren(...(on ? markedText(text, start - off, end - off) : [text]));
    chip.classList.toggle("on", on);
    const m = textDiv.querySelector("mark");
    if (m && m.scrollIntoView) m.scrollIntoView({ block: "nearest" });
  });
  return chip;
}

/* ---------------------------------------------------------------- labels in the browser */

function labelsKey() { return "featdisco.labels." + ((S.ov.evidence || {}).run_key || "run"); }

/* Map "target\u0000piece_id" -> {target, pid, pred, mark}; stored as an array (never as
 * object keys, which untrusted piece ids could collide with). */
function readLabels() {
  const out = new Map();
  try {
    const rows = JSON.parse(localStorage.getItem(labelsKey()) || "[]");
    if (Array.isArray(rows)) rows.forEach((r) => {
      if (Array.isArray(r) && r.length === 4 && (r[3] === "right" || r[3] === "wrong")) out.set(r[0] + "\u0000" + r[1], { target: String(r[0]), pid: String(r[1]), pred: !!r[2], mark: r[3] });
    });
  } catch (e) { /* unreadable: start afresh */ }
  return out;
}

function writeLabels(labels) {
  try {
    localStorage.setItem(labelsKey(), JSON.stringify([...labels.values()].map((l) => [l.target, l.pid, l.pred, l.mark])));
    return true;
  } catch (e) { return false; }
}

function labellingOn() { try { return localStorage.getItem("featdisco.labelling") === "1"; } catch (e) { return false; } }

function csvCell(v) { const s = String(v); return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }

/* The CSV `featdisco validate` reads: right keeps the LLM's verdict, wrong flips it. */
function labelsCsv(labels) {
  const rows = [...labels.values()].map((l) => [l.pid, l.target, (l.mark === "right") === l.pred ? "true" : "false"]);
  return ["piece_id,target,label", ...rows.map((r) => r.map(csvCell).join(","))].join("\n") + "\n";
}

function exportLabels() {
  const blob = new Blob([labelsCsv(readLabels())], { type: "text/csv" });
  const a = document.createElement("a");  // built here, not with el(): its href is a blob: URL
  a.href = URL.createObjectURL(blob);
  a.download = "featdisco-labels.csv";
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 5000);
}

/* Right / wrong buttons for one shown piece. */
function labelButtons(target, pid, pred, onChange) {
  const key = target + "\u0000" + pid;
  const wrap = el("span", { class: "labelbtns", "data-pid": pid });
  const verdict = pred ? "in it / yes" : "not in it / no";
  const right = el("button", { type: "button", class: "lab right", title: `the LLM's verdict (${verdict}) is right` }, "✓ right");
  const wrong = el("button", { type: "button", class: "lab wrong", title: `the LLM's verdict (${verdict}) is wrong` }, "✗ wrong");
  function paint() {
    const cur = readLabels().get(key);
    right.classList.toggle("on", !!cur && cur.mark === "right");
    wrong.classList.toggle("on", !!cur && cur.mark === "wrong");
  }
  function set(mark) {
    const labels = readLabels(), cur = labels.get(key);
    if (cur && cur.mark === mark) labels.delete(key); else labels.set(key, { target, pid, pred, mark });
    writeLabels(labels);
    paint();
    if (onChange) onChange();
  }
  right.addEventListener("click", () => set("right"));
  wrong.addEventListener("click", () => set("wrong"));
  paint();
  append(wrap, [right, wrong]);
  return wrap;
}

/* The labelling toolbar of a page: mode switch, counts and export. */
function labelBar(target, note) {
  const count = el("span", { class: "labcount" });
  function refresh() {
    const all = readLabels(), here = [...all.values()].filter((l) => l.target === target).length;
    count.textContent = `${here} marked here · ${all.size} in this run`;
  }
  const box = el("input", { type: "checkbox", class: "labmode" });
  box.checked = labellingOn();
  document.getElementById("main").classList.toggle("labelling", box.checked);
  box.addEventListener("change", () => {
    try { localStorage.setItem("featdisco.labelling", box.checked ? "1" : "0"); } catch (e) { /* storage off */ }
    document.getElementById("main").classList.toggle("labelling", box.checked);
  });
  let storable = true;
  try { localStorage.setItem("featdisco.probe", "1"); localStorage.removeItem("featdisco.probe"); } catch (e) { storable = false; }
  const exp = el("button", { type: "button", class: "export" }, "Export labels (CSV)");
  exp.addEventListener("click", exportLabels);
  refresh();
  return { bar: el("div", { class: "labelbar" }, el("label", null, box, " Labelling mode"), " ",
    storable ? null : el("span", { class: "warn" }, "this browser keeps no data for this page (storage is off): marks cannot be kept"),
    el("span", { class: "labtools" }, count, " ", exp, el("span", { class: "muted small" }, " " + note +
      " Marks stay in this browser; the CSV is what `featdisco validate RUN labels.csv` reads."))), refresh };
}

/* ---------------------------------------------------------------- one shown piece */

function evidencePiece(item, nodes, controls) {
  const textDiv = el("div", { class: "text" });
  const head = el("div", { class: "piecehead" }, kindBadge(item.kind), ` turn ${item.turn} · ${item.model ?? "unknown model"} · `,
    el("a", { href: "#/t/" + item.t }, "open the whole transcript →"), controls);
  const before = item.off > 0 ? "… " : "", after = item.len && item.off + item.text.length < item.len ? " …" : "";
  append(textDiv, [before, ...nodes(textDiv), after]);
  return { head, textDiv };
}

/* ---------------------------------------------------------------- cluster pages */

async function clusterEvidence(c) {
  const shard = await tryLoad("cq/" + Math.floor(c.id / S.ov.shards.c));
  const d = shard && Object.prototype.hasOwnProperty.call(shard, String(c.id)) ? shard[String(c.id)] : null;
  if (!d || !d.shown.length) return null;
  const target = `cluster:${c.kind}:${c.id}`;
  const bar = labelBar(target, "Right: the piece shows this behaviour; wrong: it does not.");
  const items = d.shown.map((it) => {
    const quotes = it.q || [];
    const shown = quotes.find((r) => r[4] === true && typeof r[2] === "number");
    const { head, textDiv } = evidencePiece(it, () => shown ? markedText(it.text, shown[2] - it.off, shown[3] - it.off) : [it.text],
      labelButtons(target, it.pid, true, bar.refresh));
    const chips = quotes.map((r) => featureChip(r[0], r, textDiv, it.text, it.off));
    if (shown) chips[quotes.indexOf(shown)].classList.add("on");  // the quote highlighted at first
    return el("div", { class: "piece member kind-" + it.kind, "data-pid": it.pid }, head, textDiv,
      chips.length ? el("div", { class: "matched" }, "features in this cluster, with their quotes: ", chips) : null);
  });
  return section(`Members and their quotes (a random sample of ${fmt(d.shown.length)} of ${fmt(d.members)} member pieces)`,
    bar.bar, items);
}

/* ---------------------------------------------------------------- scans */

function scanRate(s) {
  return s.rate === null || s.rate === undefined ? "–" : `${pct(s.rate)} [${pct(s.ci_low)}, ${pct(s.ci_high)}]`;
}

function viewScans() {
  const scans = (S.ov.evidence || {}).scans || [];
  show(el("h1", null, "Scans"), scans.length ? table(["scan", "question", "hits", "answered", "prevalence (95% Wilson)"],
    scans.map((s) => s.error ? [s.name, el("span", { class: "unverified" }, "could not be read: ", s.error), "–", "–", "–"] :
      [el("span", null, el("a", { href: "#/scan/" + encodeURIComponent(s.name) }, s.name),
        s.stale ? el("span", { class: "stale" }, ` stale; refresh: ${s.refresh || "rerun the scan"}`) : null),
        s.question ?? "–", fmt(s.positives), fmt(s.n), scanRate(s)])) :
    empty("This run has no scans yet: `featdisco scan RUN --question \"...\"` asks one question of every piece; rebuild the report after."));
}

async function viewScan(name) {
  const s = await tryLoad("sc/" + name);
  if (!s) return show(el("h1", null, "No such scan"), empty(`The report has no scan named ${name}.`));
  const target = "scan:" + s.name;
  const bar = labelBar(target, "Right: the LLM's answer for the piece is right; wrong: it is wrong.");
  const render = (it) => {
    const ok = it.verified === true && typeof it.start === "number";
    const controls = labelButtons(target, it.pid, it.positive, bar.refresh);
    const { head, textDiv } = evidencePiece(it, () => ok ? markedText(it.text, it.start - it.off, it.end - it.off) : [it.text], controls);
    const quote = it.quote === null || it.quote === undefined || it.quote === "" ? el("span", { class: "muted" }, "no quote") :
      ok ? el("span", null, "quote: ", el("q", null, it.quote)) :
      el("span", { class: "unverified" }, el("span", { class: "warn" }, "unverified quote"), " the rater quoted ", el("q", null, it.quote),
        ", which is not in the text: not evidence");
    return el("div", { class: "piece scanhit kind-" + it.kind + (it.positive ? " hit" : " nohit"), "data-pid": it.pid }, head,
      el("div", { class: "answer" }, el("strong", null, "answer: " + String(it.answer)), " · ", quote),
      textDiv, it.reason ? el("div", { class: "muted small" }, "reason: ", it.reason) : null);
  };
  const hits = s.items.filter((it) => it.positive), others = s.items.filter((it) => !it.positive);
  const charts = (s.by || []).map((b) => {
    const rows = b.rows.map((g) => ({ label: String(g.group), note: `${fmt(g.positives)} / ${fmt(g.n)}` + (typeof g.q_value === "number" && g.q_value < 0.05 ? " *" : ""),
      groups: [{ name: "share answered yes", value: g.rate, lo: g.ci_low, hi: g.ci_high }] }));
    return section(`Prevalence by ${b.column} (95% Wilson intervals; * differs from the rest after Benjamini–Hochberg)`,
      intervalBars(rows, ["share answered yes"], "share of answered pieces"),
      table(["group", "pieces", "yes", "rate", "95% interval", "q-value"], b.rows.map((g) => [String(g.group), fmt(g.n), fmt(g.positives), pct(g.rate),
        `[${pct(g.ci_low)}, ${pct(g.ci_high)}]`, g.q_value === null || g.q_value === undefined ? "–" : fmt(g.q_value)])));
  });
  show(el("div", { class: "crumbs" }, el("a", { href: "#/scans" }, "scans"), " › ", s.name),
    el("h1", null, "Scan: ", s.name),
    s.stale ? el("p", { class: "stale" }, `Stale: asked of earlier clusters (they changed since). Refresh: ${s.refresh || "rerun the scan"}`) : null,
    s.question ? el("p", { class: "lead" }, s.question) : null,
    el("div", { class: "cards" }, statCard("prevalence", pct(s.rate), `95% [${pct(s.ci_low)}, ${pct(s.ci_high)}]`),
      statCard("hits", fmt(s.positives), `of ${fmt(s.n)} answered`), statCard("not answered", fmt(s.failed), "failed or unsent calls"),
      statCard("unverified quotes", fmt(s.unverified), `of ${fmt(s.quotes)} quotes: not found in their piece`)),
    charts, bar.bar,
    section(`Hits (${s.hits_shown < s.positives ? "a random sample of " + fmt(s.hits_shown) + " of " : ""}${fmt(s.positives)})`,
      hits.length ? hits.map(render) : empty("No piece was answered yes.")),
    section(`Not hits (a random sample of ${fmt(s.others_shown)} of ${fmt(s.others)}: labelling some measures what the scan misses)`,
      others.length ? others.map(render) : empty("None.")));
}

/* ---------------------------------------------------------------- overview */

function evidenceCards() {
  const q = (S.ov.evidence || {}).quotes;
  if (!q) return [];
  const checked = q.verified + q.unverified;
  return [statCard("quotes verified", checked ? pct(q.verified / checked) : "–",
    `${fmt(q.unverified)} of ${fmt(checked)} quotes not found in their piece (the rater invented them)`)];
}

/* ---------------------------------------------------------------- analysis_validation */

/* Precision, recall and agreement of each target against the person's labels, with intervals. */
function validationPlots(rows) {
  const names = ["precision", "recall", "agreement"];
  const bars = rows.map((r) => ({ label: String(r.target), note: `n ${fmt(r.n)} · κ ${r.kappa === null ? "–" : r.kappa.toFixed(2)}`,
    groups: names.map((n) => ({ name: n, value: r[n], lo: r[n + "_low"], hi: r[n + "_high"] })) }));
  return bars.length ? [section("Agreement with your labels (95% Wilson intervals)", intervalBars(bars, names, "rate"))] : [];
}
