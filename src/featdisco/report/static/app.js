/* featdisco report: a static explorer of one run.
 *
 * Data comes as shards (data/<key>.js) that call FD.put(key, value); a shard is loaded
 * with a <script> tag when a view needs it, so the page works from file:// and a
 * 20k-cluster run opens as fast as a small one.
 *
 * Every string in the data (transcript text, features, labels, descriptions) is
 * untrusted: it reaches the page only through text nodes (el() / svgText()), never as
 * HTML, and links are only ever built here from numbers and encodeURIComponent.
 */
"use strict";

const FD = { store: Object.create(null), waiting: Object.create(null) };
FD.put = (key, value) => {
  FD.store[key] = value;
  const w = FD.waiting[key] || [];
  delete FD.waiting[key];
  w.forEach((p) => p.resolve(value));
};

const KINDS = ["user", "thought", "response"];
const KIND_COLOUR = { user: "#2f6fb5", thought: "#8a5cc2", response: "#2e8b57" };
const PAGE = 100;
const S = { ov: null, showPrivate: false, byId: null };
const main = document.getElementById("main");

/* ---------------------------------------------------------------- loading */

function load(key) {
  if (key in FD.store) return Promise.resolve(FD.store[key]);
  return new Promise((resolve, reject) => {
    const first = !(key in FD.waiting);
    (FD.waiting[key] = FD.waiting[key] || []).push({ resolve, reject });
    if (!first) return;
    const s = document.createElement("script");
    s.src = "data/" + key.split("/").map(encodeURIComponent).join("/") + ".js";
    s.onerror = () => {
      const w = FD.waiting[key] || [];
      delete FD.waiting[key];
      s.remove();
      w.forEach((p) => p.reject(new Error("missing data shard " + key)));
    };
    document.head.appendChild(s);
  });
}

function tryLoad(key) { return load(key).catch(() => null); }

async function clusterIndex() {
  if (S.byId) return S.byId;
  const kinds = Object.keys(S.ov.kinds);
  const lists = await Promise.all(kinds.map((k) => load("k/" + k)));
  const byId = new Map();
  lists.forEach((rows, i) => rows.forEach((r) => byId.set(r[0], brief(r, kinds[i]))));
  S.byId = byId;
  return byId;
}

function brief(r, kind) {
  return { id: r[0], label: r[1], size: r[2], pieces: r[3], transcripts: r[4], interest: r[5],
           private: r[6], x: r[7], y: r[8], description: r[9], kind: kind };
}

/* ---------------------------------------------------------------- DOM helpers (text only) */

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "href") {
        if (typeof v !== "string" || !v.startsWith("#")) throw new Error("non-internal link");
        node.setAttribute("href", v);
      } else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "style") node.style.cssText = v;
      else node.setAttribute(k, String(v));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else if (c instanceof Node) node.appendChild(c);
    else node.appendChild(document.createTextNode(String(c)));
  }
}

function show(...children) {
  main.replaceChildren();
  append(main, children);
  window.scrollTo(0, 0);
}

function fmt(n) {
  if (n === null || n === undefined) return "–";
  if (typeof n !== "number") return String(n);
  return Number.isInteger(n) ? n.toLocaleString("en-US") : n.toLocaleString("en-US", { maximumFractionDigits: 3 });
}

function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(x < 0.01 ? 2 : 1) + "%"; }

function kindBadge(kind) { return el("span", { class: "kind kind-" + kind }, kind); }

function interestBadge(v) {
  if (v === null || v === undefined) return el("span", { class: "interest none" }, "–");
  const level = v >= 70 ? "hi" : v >= 40 ? "mid" : "lo";
  return el("span", { class: "interest " + level, title: "interest to a safety researcher, 1–100" }, String(v));
}

function clusterLink(c) {
  if (!c) return el("span", { class: "muted" }, "hidden or unknown cluster");
  if (c.private && !S.showPrivate) return el("span", { class: "private-chip", title: "flagged private" }, "private cluster");
  return el("a", { href: "#/c/" + c.id, class: "clink" }, c.label || "(unnamed cluster " + c.id + ")");
}

function section(title, ...children) { return el("section", null, el("h2", null, title), children); }

function table(headers, rows, cls) {
  return el("table", { class: cls || "grid" },
    el("thead", null, el("tr", null, headers.map((h) => el("th", null, h)))),
    el("tbody", null, rows.map((r) => el("tr", null, r.map((c) => el("td", null, c))))));
}

function empty(msg) { return el("p", { class: "muted empty" }, msg); }

/* ---------------------------------------------------------------- SVG plots */

const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const n = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
  for (const c of children) {
    if (c === null || c === undefined) continue;
    n.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return n;
}

/* A histogram: bars over bins with counts; labels are edge values. */
function histogram(h, opts) {
  const W = 420, H = 170, L = 44, B = 34, T = 10, R = 8;
  const n = h.counts.length, max = Math.max(1, ...h.counts);
  const bw = (W - L - R) / Math.max(1, n);
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img" });
  g.appendChild(svg("title", {}, opts.title));
  const ticks = Math.min(4, max);
  for (let i = 0; i <= ticks; i++) {
    const v = Math.round(max * i / ticks), y = T + (H - T - B) * (1 - v / max);
    g.appendChild(svg("line", { x1: L, x2: W - R, y1: y, y2: y, class: "gridline" }));
    g.appendChild(svg("text", { x: L - 4, y: y + 4, class: "axis", "text-anchor": "end" }, fmt(v)));
  }
  h.counts.forEach((c, i) => {
    const bh = (H - T - B) * c / max;
    const r = svg("rect", { x: L + i * bw + 1, y: H - B - bh, width: Math.max(1, bw - 2), height: bh, fill: opts.colour || "#2f6fb5" });
    r.appendChild(svg("title", {}, `${fmt(h.edges[i])}–${fmt(h.edges[i + 1])}: ${fmt(c)}`));
    g.appendChild(r);
  });
  const step = Math.max(1, Math.ceil(n / 6));
  for (let i = 0; i <= n; i += step) {
    g.appendChild(svg("text", { x: L + i * bw, y: H - B + 14, class: "axis", "text-anchor": "middle" }, fmt(h.edges[i])));
  }
  g.appendChild(svg("text", { x: (L + W) / 2, y: H - 4, class: "axis label", "text-anchor": "middle" }, opts.xlabel));
  return el("figure", null, g, el("figcaption", null, opts.title));
}

/* ---------------------------------------------------------------- router */

const routes = [
  [/^\/?$/, viewOverview],
  [/^\/clusters(?:\/(\w+))?$/, viewClusters],
  [/^\/c\/(\d+)$/, viewCluster],
  [/^\/t\/(\d+)$/, viewTranscript],
  [/^\/transcripts(?:\/(\d+))?$/, viewTranscripts],
  [/^\/search$/, viewSearch],
  [/^\/map$/, viewMap],
  [/^\/analyses$/, viewAnalyses],
  [/^\/a\/([\w-]+)$/, viewAnalysis],
  [/^\/scans$/, viewScans],  // labels.js
  [/^\/scan\/([\w-]+)$/, viewScan],
];

function params() {
  const h = location.hash.slice(1), i = h.indexOf("?");
  return new URLSearchParams(i >= 0 ? h.slice(i + 1) : "");
}

async function route() {
  const h = location.hash.slice(1), path = h.split("?")[0];
  const view = path.split("/")[1] || "overview";
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active",
    a.dataset.view === view || (view === "c" && a.dataset.view === "clusters") || (view === "t" && a.dataset.view === "transcripts")
    || (view === "a" && a.dataset.view === "analyses") || (view === "scan" && a.dataset.view === "scans")));
  for (const [re, fn] of routes) {
    const m = path.match(re);
    if (m) {
      try { await fn(...m.slice(1)); } catch (e) { show(el("h1", null, "Could not show this view"), empty(String(e.message || e))); }
      return;
    }
  }
  show(el("h1", null, "Not found"), el("p", null, el("a", { href: "#/" }, "Back to the overview")));
}

/* ---------------------------------------------------------------- overview */

function statCard(label, value, note) {
  return el("div", { class: "card" }, el("div", { class: "num" }, value), el("div", { class: "lab" }, label),
    note ? el("div", { class: "note" }, note) : null);
}

function viewOverview() {
  const ov = S.ov, cfg = ov.config || {}, tots = ov.totals || {}, tot = tots.llm_totals || {};
  const feats = Object.values(ov.kinds).reduce((a, k) => a + k.features, 0);
  const cost = tot.cost_usd === null || tot.cost_usd === undefined ? "unknown" : "$" + tot.cost_usd.toFixed(2);
  const runs = tot.invocations || 0;
  const cards = el("div", { class: "cards" },
    statCard("transcripts", fmt(ov.transcripts)), statCard("pieces", fmt(ov.pieces)),
    statCard("features", fmt(feats)), statCard("clusters", fmt(ov.n_clusters)),
    statCard("LLM calls sent", fmt(tot.sent || 0), `${runs} invocation${runs === 1 ? "" : "s"}` + (tot.cached ? ` · ${fmt(tot.cached)} from cache` : "")),
    statCard("tokens", fmt((tot.input_tokens || 0) + (tot.output_tokens || 0)),
      `${fmt(tot.input_tokens || 0)} in · ${fmt(tot.output_tokens || 0)} out`),
    statCard("cost", cost, cost === "unknown" ? "no price known for this model" : null), evidenceCards());
  const headline = el("div", { class: "headline" }, (ov.headline || []).concat(tots.notes || []).map((line) => el("p", { class: "muted" }, line)));
  const cfgRows = [["rater LLM", `${cfg.llm ?? "–"} · ${cfg.model ?? "–"}`], ["embedder", cfg.embedder ?? "minilm (default)"],
    ["clusters (k)", typeof cfg.n_clusters === "object" && cfg.n_clusters ? JSON.stringify(cfg.n_clusters) : String(cfg.n_clusters ?? "auto")],
    ["features per piece", `${cfg.min_features ?? "–"}–${cfg.max_features ?? "–"}`], ["seed", String(cfg.seed ?? "–")],
    ["featdisco", (ov.versions || {}).featdisco ?? "–"], ["run created", ov.created ?? "–"], ["report built", ov.built]];
  const stageRows = (ov.stages || []).map((st) => [st.stage, st.state,
    st.seconds === null || st.seconds === undefined ? "–" : st.seconds + " s",
    st.calls === null || st.calls === undefined ? "" : fmt(st.calls), st.tokens === null || st.tokens === undefined ? "" : fmt(st.tokens),
    st.cost || "", st.counts || ""]);
  const kinds = KINDS.filter((k) => ov.kinds[k]).map((k) => {
    const info = ov.kinds[k];
    const ids = S.showPrivate ? info.top_all : info.top;
    const top = ids.map((id) => brief(ov.clusters[id], k));
    return el("div", { class: "kindcol" },
      el("h3", null, kindBadge(k), ` ${fmt(info.clusters)} clusters · ${fmt(info.pieces)} pieces`,
        info.private ? el("span", { class: "muted" }, ` · ${info.private} private`) : null,
        info.rare ? el("span", { class: "muted" }, ` · ${info.rare} from fewer than ${fmt(ov.min_transcripts)} transcripts`) : null),
      el("ol", { class: "toplist" }, top.map((c) => el("li", null, interestBadge(c.interest), " ", clusterLink(c),
        el("span", { class: "muted" }, ` ${fmt(c.size)}`)))),
      el("p", null, el("a", { href: `#/clusters/${k}` }, `All ${k} clusters →`)),
      histogram(info.sizes, { title: `${k}: cluster sizes (features per cluster)`, xlabel: "features per cluster (log bins)", colour: KIND_COLOUR[k] }),
      histogram(info.interest, { title: `${k}: interest ratings`, xlabel: "interest (1–100)", colour: KIND_COLOUR[k] }));
  });
  const analyses = ov.analyses.length ? el("ul", null, ov.analyses.map((a) => el("li", null,
    el("a", { href: "#/a/" + a.name }, a.name), el("span", { class: "muted" }, ` ${fmt(a.rows)} rows`),
    a.stale ? el("span", { class: "stale" }, ` stale: computed on earlier clusters; refresh: ${a.refresh}`) : null))) :
    empty("No analyses in this run yet (featdisco probe / compare write them).");
  const findings = (ov.findings || []).length ? section("Finding", el("pre", { class: "finding" }, ov.findings.join("\n"))) : null;
  show(el("h1", null, "Run overview"), findings, cards, headline,
    el("div", { class: "two" }, section("Configuration", table(["", ""], cfgRows, "kv")),
      section("Analyses", analyses)),
    section("Stages (LLM use over every invocation)", table(["stage", "state", "time", "LLM calls sent", "tokens", "cost", "counts"], stageRows, "grid stages")),
    ov.curation ? curationSection(ov.curation) : null,
    section("Most interesting clusters of each kind", el("div", { class: "kinds" }, kinds)),
    ov.new_clusters ? section("New in this data", newClusters(ov.new_clusters)) : null);
}

/* what a transform found that the fitted dictionary lacks (new_clusters.parquet) */
function newClusters(rows) {
  if (!rows.length) return empty("Nothing new: every behaviour in this data is one the dictionary has.");
  return table(["kind", "label", "features", "examples", "nearest existing cluster"],
    rows.map((r) => [kindBadge(r.kind), r.label || "(unnamed)", fmt(r.size), (r.examples || []).join(" · "),
      r.nearest_label || ""]), "grid newclusters");
}

/* Your edits (featdisco edit): each one applied or stale (its clusters are gone), and what is hidden. */
function curationSection(cur) {
  const stale = cur.edits.filter((e) => e.status === "stale").length, hidden = new Set(cur.hidden.map((h) => h[0]));
  return section(`Your edits (${cur.edits.length}${stale ? `, ${stale} stale` : ""})`, el("div", { class: "curation" },
    cur.edits.length ? table(["#", "edit", "status", "clusters now"], cur.edits.map((e) => [String(e.index), e.edit,
      e.status === "stale" ? el("span", { class: "stale" }, "stale: " + (e.reason || "")) : e.status,
      el("span", null, (e.now || []).flatMap((id, i) => [i ? ", " : "", hidden.has(id) ? `#${Number(id)} (hidden)`
        : el("a", { href: "#/c/" + Number(id) }, "#" + Number(id))]))])) : null,
    cur.hidden.length ? el("p", { class: "muted" }, `Hidden (not listed anywhere in this report): `
      + cur.hidden.map((h) => `${h[1]} #${h[0]} ${h[2] ?? ""}`).join("; ")) : null));
}

/* ---------------------------------------------------------------- cluster list */

async function viewClusters(kind) {
  const kinds = KINDS.filter((k) => S.ov.kinds[k]);
  kind = kind && kinds.includes(kind) ? kind : kinds[0];
  const p = params(), sort = p.get("sort") || "interest";
  const byId = await clusterIndex();
  let rows = [...byId.values()].filter((c) => c.kind === kind && (S.showPrivate || !c.private));
  const key = { interest: (c) => -(c.interest ?? -1) * 1e12 - c.size, size: (c) => -c.size,
                transcripts: (c) => -c.transcripts, label: (c) => 0 }[sort] || ((c) => -c.size);
  rows.sort((a, b) => key(a) - key(b) || (sort === "label" ? String(a.label).localeCompare(String(b.label)) : a.id - b.id));
  const hidden = [...byId.values()].filter((c) => c.kind === kind && c.private && !S.showPrivate).length;
  const filter = el("input", { type: "search", placeholder: "Filter labels and descriptions…", class: "filter", "aria-label": "Filter clusters" });
  const body = el("tbody");
  const more = el("button", { type: "button", class: "more" }, "Show more");
  let shown = 0, list = rows;
  const total = ov_kind_transcripts();
  function renderRows(reset) {
    if (reset) { body.replaceChildren(); shown = 0; }
    list.slice(shown, shown + PAGE).forEach((c) => body.appendChild(el("tr", null,
      el("td", { class: "num" }, interestBadge(c.interest)),
      el("td", null, clusterLink(c), c.private ? el("span", { class: "badge" }, "private") : null,
        c.description ? el("div", { class: "desc" }, c.description) : null),
      el("td", { class: "num" }, fmt(c.size)), el("td", { class: "num" }, fmt(c.pieces)),
      el("td", { class: "num" }, fmt(c.transcripts), el("div", { class: "muted small" }, total ? pct(c.transcripts / total) : "")))));
    shown = Math.min(list.length, shown + PAGE);
    more.hidden = shown >= list.length;
    more.textContent = `Show more (${fmt(list.length - shown)} left)`;
  }
  more.addEventListener("click", () => renderRows(false));
  filter.addEventListener("input", () => {
    const q = filter.value.toLowerCase();
    list = q ? rows.filter((c) => String(c.label).toLowerCase().includes(q) || String(c.description || "").toLowerCase().includes(q)) : rows;
    renderRows(true);
  });
  const sortLinks = [["interest", "interest"], ["size", "frequency (features)"], ["transcripts", "transcripts"], ["label", "label"]]
    .map(([s, name]) => s === sort ? el("strong", null, name) : el("a", { href: `#/clusters/${kind}?sort=${s}` }, name));
  show(el("h1", null, "Clusters"),
    el("div", { class: "tabs" }, kinds.map((k) => el("a", { href: `#/clusters/${k}?sort=${sort}`, class: k === kind ? "tab active" : "tab" },
      `${k} (${fmt(S.ov.kinds[k].clusters)})`))),
    el("div", { class: "toolbar" }, el("span", null, "Rank by ", sortLinks.flatMap((x, i) => i ? [" · ", x] : [x])), filter),
    hidden ? el("p", { class: "muted" }, `${hidden} private cluster${hidden > 1 ? "s" : ""} hidden (tick “Show private clusters” to see them).`) : null,
    el("table", { class: "grid clusters" }, el("thead", null, el("tr", null,
      el("th", null, "interest"), el("th", null, "label and description"), el("th", null, "features"), el("th", null, "pieces"),
      el("th", null, "transcripts"))), body), more);
  renderRows(true);
}

function ov_kind_transcripts() { return S.ov.transcripts || 0; }

/* ---------------------------------------------------------------- cluster page */

async function viewCluster(idText) {
  const id = Number(idText);
  const byId = await clusterIndex();
  const c = byId.get(id);
  if (!c) return show(el("h1", null, "No such cluster"), empty(`Cluster ${id} is not in this run.`));
  if (c.private && !S.showPrivate) {
    return show(el("h1", null, "Private cluster"), el("p", null,
      "The rater flagged this cluster as revealing private information. Tick “Show private clusters” above to see it."));
  }
  const shard = await load("c/" + Math.floor(id / S.ov.shards.c));
  const d = shard.find((r) => r.id === id) || { members: [], pieces: [], examples: [] };
  const members = d.members.map(([text, n]) => [text, fmt(n)]);
  const pieces = d.pieces.map((p) => el("div", { class: "piece kind-" + p.kind },
    el("div", { class: "piecehead" }, kindBadge(p.kind), ` turn ${p.turn} · ${p.model ?? "unknown model"} · `,
      el("a", { href: "#/t/" + p.t }, "open the whole transcript →")),
    el("div", { class: "text" }, p.text, p.cut ? el("span", { class: "muted" }, " … (cut; the transcript has it all)") : null),
    p.match && p.match.length ? el("div", { class: "matched" }, "features in this cluster: ",
      p.match.map((m) => el("span", { class: "chip" }, m))) : null));
  const evidence = await clusterEvidence(c);
  show(el("div", { class: "crumbs" }, el("a", { href: `#/clusters/${c.kind}` }, `${c.kind} clusters`), ` › cluster ${c.id}`),
    el("h1", null, kindBadge(c.kind), " ", c.label || "(unnamed)", c.private ? el("span", { class: "badge" }, "private") : null),
    d.description ? el("p", { class: "lead" }, d.description) : null,
    el("div", { class: "cards" }, statCard("interest", c.interest ?? "–", d.reason || null), statCard("features", fmt(c.size)),
      statCard("pieces", fmt(c.pieces)), statCard("transcripts", fmt(c.transcripts),
        S.ov.transcripts ? pct(c.transcripts / S.ov.transcripts) + " of all" : null)),
    section("Example pieces", pieces.length ? pieces : empty("No pieces.")), evidence,
    section(`Member features (the ${members.length} most frequent distinct ones)`, members.length ?
      table(["feature", "times"], members) : empty("No features.")));
}

/* ---------------------------------------------------------------- transcripts */

async function viewTranscript(tText) {
  const t = Number(tText);
  const [shard, byId, quotes] = await Promise.all([load("t/" + Math.floor(t / S.ov.shards.t)), clusterIndex(), quoteShard(t)]);
  const r = shard.rows.find((x) => x.i === t);
  if (!r) return show(el("h1", null, "No such transcript"), empty(`Transcript ${t} is not in this run.`));
  let meta = null;
  try { meta = r.meta ? JSON.parse(r.meta) : null; } catch (e) { meta = { metadata: r.meta }; }
  const metaRows = Object.entries(meta || {}).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]);
  const pieces = r.pieces.map((p) => {
    const textDiv = el("div", { class: "text" }, p.text), ev = pieceEvidence(quotes, t, p);
    const byCluster = new Map();
    p.f.forEach(([text, cid]) => { if (!byCluster.has(cid)) byCluster.set(cid, []); byCluster.get(cid).push(text); });
    const feats = [...byCluster.entries()].map(([cid, texts]) => {
      const c = byId.get(cid);
      if (c && c.private && !S.showPrivate) return el("li", null, el("span", { class: "private-chip" }, "private cluster"), el("span", { class: "muted" }, ` ${texts.length} feature${texts.length > 1 ? "s" : ""} hidden`));
      return el("li", null, clusterLink(c), " ", texts.map((x) => featureChip(x, ev.get(x), textDiv, p.text, 0)));
    });
    return el("div", { class: "turn kind-" + p.kind },
      el("div", { class: "piecehead" }, kindBadge(p.kind), ` turn ${p.turn}`, p.trunc ? el("span", { class: "badge" }, "truncated") : null),
      textDiv,
      p.tools ? el("details", { class: "tools" }, el("summary", null, "tool output (not featurized)"), el("div", { class: "text muted" }, p.tools)) : null,
      feats.length ? el("details", { class: "feats", open: "" }, el("summary", null, `${p.f.length} feature${p.f.length === 1 ? "" : "s"} in ${feats.length} cluster${feats.length === 1 ? "" : "s"}`),
        el("ul", null, feats)) : el("div", { class: "muted small" }, "no features"));
  });
  const n = S.ov.transcripts;
  show(el("div", { class: "crumbs" }, el("a", { href: "#/transcripts/" + Math.floor(t / PAGE) }, "transcripts"), ` › ${t + 1} of ${fmt(n)}`,
      "  ", t > 0 ? el("a", { href: "#/t/" + (t - 1) }, "← previous") : null, " ",
      t + 1 < n ? el("a", { href: "#/t/" + (t + 1) }, "next →") : null),
    el("h1", null, "Transcript ", el("code", null, r.id)),
    el("p", { class: "muted" }, `model ${r.model ?? "unknown"}`, r.source ? ` · ${r.source}` : "", r.record ? ` · ${r.record}` : ""),
    metaRows.length ? el("details", { class: "meta" }, el("summary", null, "metadata"), table(["", ""], metaRows, "kv")) : null,
    r.system ? el("div", { class: "turn kind-system" }, el("div", { class: "piecehead" }, el("span", { class: "kind" }, "system")), el("div", { class: "text" }, r.system)) : null,
    el("div", { class: "legend" }, KINDS.map((k) => el("span", null, kindBadge(k))), " user turns, the model's thoughts and its responses are told apart by colour and label"),
    pieces);
}

async function viewTranscripts(pageText) {
  const page = Number(pageText || 0), per = S.ov.shards.ti, n = S.ov.transcripts;
  const first = page * PAGE, shard = await load("ti/" + Math.floor(first / per));
  const rows = [];
  for (let i = first; i < Math.min(n, first + PAGE); i++) {
    const sh = i >= shard.first + shard.rows.length ? await load("ti/" + Math.floor(i / per)) : shard;
    const r = sh.rows[i - sh.first];
    if (r) rows.push([el("a", { href: "#/t/" + i }, r[0]), r[1] ?? "–", el("span", { class: "snippet" }, r[2])]);
  }
  const pages = Math.ceil(n / PAGE);
  show(el("h1", null, "Transcripts"), el("p", { class: "muted" }, `${fmt(n)} transcripts · page ${page + 1} of ${pages}`),
    table(["transcript", "model", "opening"], rows),
    el("p", { class: "pager" }, page > 0 ? el("a", { href: "#/transcripts/" + (page - 1) }, "← previous") : null, " ",
      page + 1 < pages ? el("a", { href: "#/transcripts/" + (page + 1) }, "next →") : null));
}

/* ---------------------------------------------------------------- search */

function tokens(text) {
  return String(text).toLowerCase().split(/[^\p{L}\p{N}]+/u).filter((t) => t.length >= 2 && t.length <= 30);
}

function keyOf(tok) {
  return [...tok].slice(0, 2).map((c) => /[a-z0-9]/.test(c) ? c : "u" + c.codePointAt(0).toString(16)).join("");
}

async function lookup(tok) {
  const shard = await tryLoad("s/" + keyOf(tok));
  return shard && Object.prototype.hasOwnProperty.call(shard, tok) ? shard[tok] : { c: [], f: [], t: [] };
}

async function viewSearch() {
  const q = params().get("q") || "";
  document.getElementById("q").value = q;
  const words = [...new Set(tokens(q))];
  if (!words.length) return show(el("h1", null, "Search"), empty("Type words to look for in cluster labels, features and transcript text."));
  if (!S.ov.search) return show(el("h1", null, "Search"), empty("This report was built without a search index (--no-search)."));
  const [hits, byId] = await Promise.all([Promise.all(words.map(lookup)), clusterIndex()]);
  const inter = (lists) => lists.reduce((a, b) => a.filter((x) => b.includes(x)));
  const visible = (cid) => { const c = byId.get(cid); return c && (S.showPrivate || !c.private); };
  const clusters = inter(hits.map((h) => h.c)).filter(visible).map((id) => byId.get(id));
  const lower = words;
  const feats = hits.reduce((best, h) => (h.f.length && (!best || h.f.length < best.length)) ? h.f : best, null) || [];
  const featRows = feats.filter(([text, cid]) => visible(cid) && lower.every((w) => tokens(text).includes(w)))
    .map(([text, cid, n]) => [text, clusterLink(byId.get(cid)), fmt(n)]);
  const tids = inter(hits.map((h) => h.t)).slice(0, 40);
  const per = S.ov.shards.ti;
  const dirs = await Promise.all([...new Set(tids.map((t) => Math.floor(t / per)))].map((s) => load("ti/" + s)));
  const dir = new Map();
  dirs.forEach((d) => d.rows.forEach((r, i) => dir.set(d.first + i, r)));
  const capped = hits.some((h) => h.t.length >= 60);
  show(el("h1", null, "Search: ", el("q", null, q)),
    section(`Clusters whose label or description has ${words.length > 1 ? "all these words" : "this word"} (${clusters.length})`,
      clusters.length ? table(["interest", "cluster", "kind", "features"], clusters.map((c) => [interestBadge(c.interest), clusterLink(c), kindBadge(c.kind), fmt(c.size)])) : empty("None.")),
    section(`Features (${featRows.length})`, featRows.length ? table(["feature", "cluster", "times"], featRows) : empty("None.")),
    section(`Transcripts whose text has ${words.length > 1 ? "all these words" : "this word"} (${tids.length}${capped ? ", from the first matches indexed per word" : ""})`,
      tids.length ? table(["transcript", "model", "opening"], tids.map((t) => { const r = dir.get(t) || [String(t), "", ""];
        return [el("a", { href: "#/t/" + t }, r[0]), r[1] ?? "–", el("span", { class: "snippet" }, r[2])]; })) : empty("None.")));
}

/* the map view (viewMap) is in map.js */

/* ---------------------------------------------------------------- analyses */

function viewAnalyses() {
  const list = S.ov.analyses;
  show(el("h1", null, "Analyses"), list.length ? table(["analysis", "rows", "state", "columns"], list.map((a) =>
    [el("a", { href: "#/a/" + a.name }, a.name), fmt(a.rows),
      a.stale ? el("span", { class: "stale" }, `stale: computed on earlier clusters; refresh: ${a.refresh}`) : "current",
      a.columns.join(", ")])) :
    empty("This run has no analysis outputs yet. Run `featdisco compare DIR --by model`, `featdisco probe DIR` and the others, then rebuild the report."));
}

const CLUSTER_COL = /(^|_)(cluster|cluster_id|target|target_id|parent_id|child_id|source_id|user_cluster|cluster_a|cluster_b)$/;

function cellFor(col, v, byId) {
  if (Array.isArray(v)) return /cluster|driver/.test(col) ? driverCell(v, byId) : v.map(String).join(", ");
  if (typeof v === "number" && CLUSTER_COL.test(col) && byId.has(v)) return el("span", null, clusterLink(byId.get(v)), el("span", { class: "muted small" }, ` #${v}`));
  if (typeof v === "number") return fmt(v);
  if (typeof v === "boolean") return v ? "yes" : "no";
  return v === null ? "–" : String(v);
}

async function viewAnalysis(name) {
  const [a, byId] = await Promise.all([load("a/" + name), clusterIndex()]);
  const cols = Object.keys(a.columns), n = cols.length ? a.columns[cols[0]].length : 0;
  const rows = [];
  for (let i = 0; i < n; i++) rows.push(Object.fromEntries(cols.map((c) => [c, a.columns[c][i]])));
  const hiddenIds = new Set(((S.ov.curation || {}).hidden || []).map((h) => h[0]));  // hidden by featdisco edit
  const visible = rows.filter((r) => !cols.some((c) => CLUSTER_COL.test(c) && hiddenIds.has(r[c]))
    && (S.showPrivate || !cols.some((c) => CLUSTER_COL.test(c) && byId.has(r[c]) && byId.get(r[c]).private)));
  if (name.startsWith("ask_") && !/_step\d+$/.test(name) && (a.meta || {}).question) return viewAsk(name, a, rows, byId);  // featdisco ask
  const rates = cols.includes("rate_high") ? await tryLoad("a/" + name + "_rates") : null;
  const plots = analysisPlots(name, cols, visible, byId, rates);
  const shown = visible.slice(0, 300);
  const linked = cols.some((c) => CLUSTER_COL.test(c));
  const useful = cols.filter((c) => !(linked && /(^|_)labels?$/.test(c))).filter((c) => shown.some((r) => r[c] !== null && r[c] !== undefined && !(Array.isArray(r[c]) && !r[c].length)));
  show(el("div", { class: "crumbs" }, el("a", { href: "#/analyses" }, "analyses"), " › ", name),
    el("h1", null, name),
    a.stale ? el("p", { class: "stale" }, `Stale: computed on earlier clusters (the clusters changed since; its cluster ids and labels may not match). Refresh: ${a.refresh}`) : null,
    el("p", { class: "muted" }, `${fmt(a.rows)} rows` + (a.rows > n ? `, the first ${fmt(n)} loaded` : "") + `; the table shows ${shown.length}.`),
    Object.keys(a.meta || {}).length ? table(["", ""], Object.entries(a.meta), "kv") : null,
    plots, section("Table", el("div", { class: "scroll" }, table(useful, shown.map((r) => useful.map((c) => cellFor(c, r[c], byId)))))),
    useful.length < cols.length ? el("p", { class: "muted small" }, `Left out (empty, or labels already shown as links): ${cols.filter((c) => !useful.includes(c)).join(", ")}.`) : null);
}

/* featdisco ask: the question, the plan, each step's table, the answer and its verified citations */
async function viewAsk(name, a, rows, byId) {
  const steps = rows.filter((r) => r.part === "step");
  const tables = await Promise.all(steps.map((s) => tryLoad("a/" + name + "_step" + s.step)));
  const answer = rows.find((r) => r.part === "answer") || {};
  const cites = rows.filter((r) => r.part === "citation");
  const stepTable = (t) => {
    const cols = Object.keys(t.columns), n = cols.length ? t.columns[cols[0]].length : 0;
    return el("div", { class: "scroll" }, table(cols, Array.from({ length: n }, (_, i) => cols.map((c) => cellFor(c, t.columns[c][i], byId)))));
  };
  show(el("div", { class: "crumbs" }, el("a", { href: "#/analyses" }, "analyses"), " › ", name),
    el("h1", { class: "ask-question" }, a.meta.question),
    section("Plan", el("ol", null, steps.map((s) => el("li", null, el("b", null, s.tool), " – ", s.text, el("div", { class: "muted small" }, s.detail))))),
    steps.map((s, i) => section(`Step ${s.step}: ${s.tool}`, tables[i] ? stepTable(tables[i]) : empty("No table: the step failed or gave no rows (see the plan)."))),
    section("Answer", el("p", { class: "ask-answer" }, answer.text || "(no answer)"), el("p", { class: "muted small" }, answer.detail || "")),
    section("Citations", cites.length ? table(["piece", "quote (found in the piece)"], cites.map((c) => [c.piece_id, c.text])) : empty("No citation verified.")),
    el("p", { class: "muted small ask-checks" }, `Citations: ${a.meta.citations}. Numbers: ${a.meta.numbers}.` + (a.meta.incomplete && a.meta.incomplete !== "no" ? ` Incomplete: ${a.meta.incomplete}.` : "")
      + (a.meta.unsupported && a.meta.unsupported !== "no" ? ` Unsupported answer: ${a.meta.unsupported}.` : "")));
}

function pick(cols, ...names) { return names.find((n) => cols.includes(n)); }

function analysisPlots(name, cols, rows, byId, rates) {
  const out = [];
  if (cols.includes("cluster_a") && cols.includes("npmi")) return cooccurrencePlots(rows, byId);
  if (name.startsWith("validation") && cols.includes("kappa")) return validationPlots(rows);  // labels.js
  if (cols.includes("precision") && cols.includes("recall") && cols.includes("members_shown")) return labelQualityPlots(rows, byId);
  const f1 = pick(cols, "f1", "test_f1", "F1");
  if (f1) {
    const vals = rows.map((r) => r[f1]).filter((v) => typeof v === "number");
    const edges = Array.from({ length: 21 }, (_, i) => i / 20), counts = new Array(20).fill(0);
    vals.forEach((v) => { counts[Math.min(19, Math.max(0, Math.floor(v * 20)))]++; });
    out.push(section("Probe F1 distribution", histogram({ edges, counts }, { title: `F1 of ${vals.length} probes`, xlabel: "test F1" })));
    const target = pick(cols, "target", "target_id", "cluster_id");
    const beat = pick(cols, "beats_baseline");
    if (beat) out.push(el("p", null, `${rows.filter((r) => r[beat]).length} of ${vals.length} fitted probes beat the prior baseline.`));
    const base = pick(cols, "baseline_f1", "prior_f1", "base_f1");
    if (target) {
      const top = [...rows].filter((r) => typeof r[f1] === "number").sort((a, b) => b[f1] - a[f1]).slice(0, 25);
      const drivers = pick(cols, "top_user_clusters", "drivers", "top_features", "top_weights");
      out.push(section("Most predictable targets", table(["target", "F1", base ? "baseline F1" : "", drivers ? "driven by" : ""].filter(Boolean),
        top.map((r) => [cellFor("target", r[target], byId), fmt(r[f1]), base ? fmt(r[base]) : null, drivers ? driverCell(r[drivers], byId) : null].filter((x) => x !== null)))));
    }
  }
  const cid = pick(cols, "cluster_id", "cluster");
  if (cid && cols.includes("rate_high") && cols.includes("group_high")) {
    // analysis_compare: one row per cluster, ranked; intervals come from compare_rates
    const long = rates ? rates.columns : null;
    const byCluster = new Map();
    if (long && long.cluster_id) long.cluster_id.forEach((c, i) => {
      if (!byCluster.has(c)) byCluster.set(c, []);
      byCluster.get(c).push({ name: String(long.group[i]), value: long.rate[i], lo: long.ci_low ? long.ci_low[i] : null, hi: long.ci_high ? long.ci_high[i] : null, n: long.n ? long.n[i] : undefined });
    });
    const top = rows.filter((r) => byId.has(r[cid])).slice(0, 20);
    const groupNames = [...new Set(top.flatMap((r) => byCluster.has(r[cid]) ? byCluster.get(r[cid]).map((g) => g.name) : [String(r.group_high), String(r.group_low)]))].sort();
    const bars = top.map((r) => {
      const gs = byCluster.get(r[cid]) || [{ name: String(r.group_high), value: r.rate_high }, { name: String(r.group_low), value: r.rate_low }];
      const ratio = typeof r.rate_ratio === "number" ? (r.rate_ratio > 1e9 ? "only in " + r.group_high : `${r.group_high} ×${r.rate_ratio.toFixed(1)}`) : "";
      return { label: byId.get(r[cid]).label || String(r[cid]), note: ratio + (r.significant ? " *" : ""),
        groups: groupNames.map((n) => gs.find((g) => g.name === n) || { name: n, value: 0, lo: null, hi: null }) };
    });
    if (bars.length) out.push(section("Rate of each cluster per group, most different first (95% Wilson intervals; * significant after Benjamini–Hochberg)",
      intervalBars(bars, groupNames, "share of pieces with the cluster")));
  } else if (cid && cols.includes("group") && cols.includes("rate")) {
    // analysis_compare_rates alone: the clusters with the highest rate in any group
    const best = new Map();
    rows.forEach((r) => { if (byId.has(r[cid])) best.set(r[cid], Math.max(best.get(r[cid]) ?? 0, r.rate ?? 0)); });
    const ids = [...best.entries()].sort((a, b) => b[1] - a[1]).slice(0, 20).map((e) => e[0]);
    const groupNames = [...new Set(rows.map((r) => String(r.group)))].sort();
    const bars = ids.map((id) => ({ label: byId.get(id).label || String(id), note: "",
      groups: groupNames.map((n) => { const r = rows.find((x) => x[cid] === id && String(x.group) === n);
        return r ? { name: n, value: r.rate, lo: r.ci_low ?? null, hi: r.ci_high ?? null, n: r.n } : { name: n, value: 0, lo: null, hi: null }; }) }));
    if (bars.length) out.push(section("Rate per group (95% Wilson intervals)", intervalBars(bars, groupNames, "share of pieces with the cluster")));
  }
  const parent = pick(cols, "parent_id", "parent");
  const child = pick(cols, "cluster_id", "child_id", "node_id");
  if (parent && child) out.push(section("Hierarchy", hierarchyTree(rows, parent, child, cols, byId)));
  return out;
}

function driverCell(v, byId) {
  const ids = Array.isArray(v) ? v : typeof v === "string" ? v.split(/[,;\s]+/).map(Number).filter((x) => !Number.isNaN(x)) : [];
  if (!ids.length) return v === null || v === undefined ? "–" : String(v);
  return el("span", null, ids.slice(0, 5).flatMap((id, i) => [i ? "; " : "", byId.has(id) ? clusterLink(byId.get(id)) : String(id)]));
}

function hierarchyTree(rows, parent, child, cols, byId) {
  const labelCol = pick(cols, "label", "name", "parent_label");
  const kids = new Map(), ids = new Set(rows.map((r) => r[child]));
  rows.forEach((r) => { const p = r[parent]; if (!kids.has(p)) kids.set(p, []); kids.get(p).push(r); });
  const roots = rows.filter((r) => r[parent] === null || r[parent] === undefined || !ids.has(r[parent]));
  const seen = new Set();
  function node(r, depth) {
    if (seen.has(r[child]) || depth > 6) return null;
    seen.add(r[child]);
    const c = byId.get(r[child]);
    const name = c && !labelCol ? clusterLink(c) : String(r[labelCol] ?? r[child]);
    const sub = (kids.get(r[child]) || []).map((k) => node(k, depth + 1)).filter(Boolean);
    return sub.length ? el("li", null, el("details", { open: depth < 1 ? "" : null }, el("summary", null, name, el("span", { class: "muted" }, ` (${sub.length})`)), el("ul", null, sub))) : el("li", null, c ? clusterLink(c) : name);
  }
  return el("ul", { class: "tree" }, roots.slice(0, 500).map((r) => node(r, 0)));
}

/* ---------------------------------------------------------------- start */

function start() {
  const box = document.getElementById("private");
  try { S.showPrivate = localStorage.getItem("featdisco.showPrivate") === "1"; } catch (e) { S.showPrivate = false; }
  box.checked = S.showPrivate;
  box.addEventListener("change", () => {
    S.showPrivate = box.checked;
    try { localStorage.setItem("featdisco.showPrivate", box.checked ? "1" : "0"); } catch (e) { /* storage off */ }
    route();
  });
  document.getElementById("searchform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.hash = "#/search?q=" + encodeURIComponent(document.getElementById("q").value);
  });
  window.addEventListener("hashchange", route);
  load("overview").then((ov) => { S.ov = ov; route(); })
    .catch(() => show(el("h1", null, "No data"), empty("data/overview.js is missing: rebuild with `featdisco report RUN_DIR`.")));
}

start();
