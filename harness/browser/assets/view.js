// skillsweep run browser: one row per cell, filters, a cell's prompt, response and verdicts,
// baseline vs curated and base vs adapter side by side with a word diff. No network: the
// data is the JSON in #ssb-data. Only one page of rows is in the DOM at a time, so 10,000
// cells cost a filter pass over an array, not 10,000 table rows.
(function () {
  "use strict";
  const started = performance.now();
  const D = JSON.parse(document.getElementById("ssb-data").textContent);
  const root = document.getElementById("ssb");
  const FIELDS = D.verdict_fields;
  const F = Object.fromEntries(FIELDS.map((f, i) => [f, i]));
  const cells = D.cells;
  const PAGE = 50;
  const SEP = "\u0001";
  const key = (...parts) => parts.join(SEP);
  const byModel = new Map(), bases = new Map(), adapted = new Map();
  cells.forEach((c, i) => {
    c.i = i;
    byModel.set(key(c.model, c.task, c.cond), i);
    const k = key(c.base, c.task, c.cond);
    if (c.adapter) { if (!adapted.has(k)) adapted.set(k, []); adapted.get(k).push(i); }
    else bases.set(k, i);
  });

  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
      else if (v !== null && v !== undefined) node.setAttribute(k, v);
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined) continue;
      node.appendChild(typeof kid === "string" || typeof kid === "number" ? document.createTextNode(String(kid)) : kid);
    }
    return node;
  }

  // replaceChildren would print a null as "null"
  const fill = (node, ...kids) => node.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined));

  function verdictOf(cell, judge) {
    const v = cell.v[judge];
    if (!v) return "none";
    return v[F.passed] === 1 ? "pass" : v[F.passed] === 0 ? "fail" : "unscored";
  }
  function badge(cell, judge) {
    const v = verdictOf(cell, judge);
    return el("span", {class: "ssb-" + v, title: judge}, v === "none" ? "—" : v);
  }

  // -- filters
  const state = {model: "", cond: "", skill: "", qt: "", judge: D.judges[0] || "", verdict: "", disagree: "", q: "", page: 0};
  const uniq = (f) => [...new Set(cells.map(f).filter((x) => x !== null && x !== undefined))].sort();
  function select(name, label, values, labels) {
    const s = el("select", {id: "ssb-f-" + name, on: {change: (e) => { state[name] = e.target.value; state.page = 0; refresh(); }}},
      values.map((v, i) => el("option", {value: v}, labels ? labels[i] : (v === "" ? "all" : v))));
    return el("label", {}, label, s);
  }
  const pairs = D.agreement.map((p) => p.a + SEP + p.b);
  const filters = el("div", {class: "ssb-filters"},
    select("model", "model", ["", ...uniq((c) => c.model)]),
    select("cond", "condition", ["", ...uniq((c) => c.cond)]),
    select("skill", "skill", ["", ...uniq((c) => c.skill)]),
    select("qt", "query type", ["", ...uniq((c) => c.qt)]),
    select("judge", "judge", D.judges.length ? D.judges : [""], D.judges.length ? null : ["(no verdicts)"]),
    select("verdict", "verdict", ["", "pass", "fail", "unscored", "none"], ["all", "pass", "fail", "unscored", "no verdict"]),
    D.judges.length > 1 ? select("disagree", "judges disagree", ["", "any", ...pairs],
      ["—", "any two judges", ...D.agreement.map((p) => p.a + " vs " + p.b)]) : null,
    el("label", {}, "text", el("input", {id: "ssb-f-q", type: "search", placeholder: "in response",
      on: {input: (e) => { state.q = e.target.value.toLowerCase(); state.page = 0; refresh(); }}})));

  function disagrees(cell, spec) {
    if (spec === "any") {
      const seen = new Set(D.judges.map((j) => cell.v[j] ? cell.v[j][F.passed] : null).filter((x) => x === 0 || x === 1));
      return seen.size === 2;
    }
    const [a, b] = spec.split(SEP);
    const va = cell.v[a] ? cell.v[a][F.passed] : null, vb = cell.v[b] ? cell.v[b][F.passed] : null;
    return va !== null && vb !== null && va !== vb;
  }
  function matches(c) {
    return (!state.model || c.model === state.model) && (!state.cond || c.cond === state.cond) &&
      (!state.skill || c.skill === state.skill) && (!state.qt || c.qt === state.qt) &&
      (!state.verdict || verdictOf(c, state.judge) === state.verdict) &&
      (!state.disagree || disagrees(c, state.disagree)) &&
      (!state.q || ((c.final || "") + " " + (c.think || "")).toLowerCase().includes(state.q));
  }

  // -- agreement table, linked to the disagree filter
  function setFilter(name, value) {
    state[name] = value;
    const s = document.getElementById("ssb-f-" + name);
    if (s) s.value = value;
  }
  const agreementTable = D.agreement.length ? el("table", {id: "ssb-agreement"},
    el("tr", {}, ["judge A", "judge B", "model", "n", "agreement", "κ", "unscored excl.", "disagree"].map((h) => el("th", {}, h))),
    D.agreement.flatMap((p) => Object.entries(p.models).map(([model, m]) => el("tr", {},
      el("td", {}, p.a), el("td", {}, p.b), el("td", {}, model), el("td", {}, m.n),
      el("td", {}, m.agreement === null ? "—" : m.agreement.toFixed(3)), el("td", {}, m.kappa === null ? "—" : m.kappa.toFixed(3)),
      el("td", {}, m.unscored_excluded),
      el("td", {}, el("a", {class: "ssb-link", "data-pair": p.a + " vs " + p.b, on: {click: () => {
        setFilter("disagree", p.a + SEP + p.b); setFilter("model", model); setFilter("judge", p.a);
        setFilter("verdict", ""); state.page = 0; refresh(); table.scrollIntoView();
      }}}, String(m.disagree) + " cells")))))) : null;

  // -- the table: one page of rows in the DOM
  const count = el("span", {id: "ssb-count"});
  const pageInfo = el("span", {});
  const go = (d) => { state.page += d; refresh(); };
  const prev = el("button", {id: "ssb-prev", on: {click: () => go(-1)}}, "‹ prev");
  const next = el("button", {id: "ssb-next", on: {click: () => go(1)}}, "next ›");
  const tbody = el("tbody", {id: "ssb-rows"});
  const head = el("tr", {}, ["model", "condition", "skill", "type", "task", ...D.judges, "response"].map((h) => el("th", {}, h)));
  const table = el("table", {id: "ssb-table"}, el("thead", {}, head), tbody);
  const detail = el("div", {id: "ssb-detail"});
  let filtered = [];
  let openCell = null;

  function refresh() {
    const t0 = performance.now();
    filtered = [];
    for (const c of cells) if (matches(c)) filtered.push(c.i);
    const pages = Math.max(1, Math.ceil(filtered.length / PAGE));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    const rows = document.createDocumentFragment();
    for (const i of filtered.slice(state.page * PAGE, (state.page + 1) * PAGE)) {
      const c = cells[i];
      rows.appendChild(el("tr", {"data-cell": c.id, class: c.i === openCell ? "ssb-open" : null, on: {click: () => open(c.i)}},
        el("td", {}, c.model), el("td", {}, c.cond), el("td", {}, c.skill), el("td", {}, c.qt), el("td", {}, c.task),
        D.judges.map((j) => el("td", {}, badge(c, j))),
        el("td", {class: "ssb-snippet"}, (c.final || "").slice(0, 160))));
    }
    tbody.replaceChildren(rows);
    count.textContent = `showing ${filtered.length} of ${cells.length} cells`;
    pageInfo.textContent = `page ${state.page + 1} of ${pages}`;
    prev.disabled = state.page === 0;
    next.disabled = state.page >= pages - 1;
    window.ssbStats.lastFilterMs = performance.now() - t0;
  }

  // -- word diff (LCS over words; long texts are shown without it)
  function wordDiff(a, b) {
    const x = (a || "").split(/\s+/).filter(Boolean), y = (b || "").split(/\s+/).filter(Boolean);
    if (x.length * y.length > 4e6) return null;
    const n = x.length, m = y.length, L = new Uint16Array((n + 1) * (m + 1));
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
      L[i * (m + 1) + j] = x[i] === y[j] ? L[(i + 1) * (m + 1) + j + 1] + 1 : Math.max(L[(i + 1) * (m + 1) + j], L[i * (m + 1) + j + 1]);
    const left = [], right = [];
    let i = 0, j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && x[i] === y[j]) { left.push(x[i] + " "); right.push(y[j] + " "); i++; j++; }
      else if (j < m && (i >= n || L[i * (m + 1) + j + 1] >= L[(i + 1) * (m + 1) + j])) { right.push(el("ins", {}, y[j]), " "); j++; }
      else { left.push(el("del", {}, x[i]), " "); i++; }
    }
    return [left, right];
  }

  function verdictTable(c) {
    if (!D.judges.length) return el("p", {}, "No verdicts yet.");
    return el("table", {class: "ssb-verdicts"},
      el("tr", {}, ["judge", "kind", "verdict", "rule", "extracted", "rationale", "unscored reason", "escalated from"].map((h) => el("th", {}, h))),
      D.judges.map((j) => {
        const v = c.v[j];
        if (!v) return el("tr", {class: "ssb-verdict", "data-judge": j}, el("td", {}, j), el("td", {colspan: 7, class: "ssb-none"}, "no verdict"));
        return el("tr", {class: "ssb-verdict", "data-judge": j}, el("td", {}, j), el("td", {}, v[F.judge_kind] || ""),
          el("td", {}, badge(c, j)), el("td", {}, v[F.rule] || ""), el("td", {}, v[F.extracted] || ""),
          el("td", {}, v[F.rationale] || ""), el("td", {}, v[F.unscored_reason] || ""), el("td", {}, v[F.escalated_from] || ""));
      }));
  }

  function side(title, cls, a, b, la, lb) {
    if (a === undefined || b === undefined) return null;
    const A = cells[a], B = cells[b];
    const diff = wordDiff(A.final, B.final);
    const column = (c, label, words) => el("div", {},
      el("h4", {}, label + " · ", D.judges.map((j) => [j + ": ", badge(c, j), "  "])),
      el("pre", {}, words || c.final || ""));
    return el("section", {class: cls},
      el("h3", {}, title, A.final === B.final ? " (byte-identical)" : ""),
      diff ? null : el("p", {}, "(too long for a word diff)"),
      el("div", {class: "ssb-side"}, column(A, la, diff && diff[0]), column(B, lb, diff && diff[1])));
  }

  function open(i) {
    openCell = i;
    const c = cells[i];
    for (const tr of tbody.children) tr.classList.toggle("ssb-open", tr.getAttribute("data-cell") === c.id);
    const task = D.tasks[c.task] || {};
    const prompt = c.prompt === null || c.prompt === undefined ? null : D.prompts[c.prompt];
    const other = c.cond === "baseline" ? "curated" : c.cond === "curated" ? "baseline" : null;
    const partner = other ? byModel.get(key(c.model, c.task, other)) : undefined;
    const [bl, cu] = c.cond === "baseline" ? [i, partner] : [partner, i];
    const k = key(c.base, c.task, c.cond);
    const baseCell = bases.get(k);
    const adapterCell = c.adapter ? i : (adapted.get(k) || [])[0];
    fill(detail,
      el("h3", {}, `${c.model} · ${c.cond} · ${c.task} (${c.skill}, ${c.qt})`),
      task.question ? el("p", {}, el("b", {}, "Question: "), task.question, el("br"), el("b", {}, "Expected: "), task.expected) : null,
      prompt ? el("details", {}, el("summary", {}, "prompt"), prompt.map((m) => el("pre", {}, m))) : null,
      c.think ? el("details", {}, el("summary", {}, "thinking"), el("pre", {class: "ssb-think"}, c.think)) : null,
      el("h4", {}, "response", c.finish && c.finish !== "stop" ? ` (finish: ${c.finish})` : ""),
      el("pre", {class: "ssb-response"}, c.final || ""),
      el("h4", {}, "verdicts"), verdictTable(c),
      side("baseline vs curated", "ssb-blcu", bl, cu, "baseline", "curated"),
      baseCell !== undefined && adapterCell !== undefined
        ? side("base vs adapter", "ssb-adapter", baseCell, adapterCell, cells[baseCell].model, cells[adapterCell].model) : null);
    detail.scrollIntoView();
  }

  window.ssbStats = {initMs: 0, lastFilterMs: 0};
  fill(root,el("h2", {}, `Responses: ${D.run}`),
    agreementTable ? el("div", {}, el("h3", {}, "Judge agreement (click a count to list the disagreements)"), agreementTable) : null,
    filters, el("div", {class: "ssb-pager"}, count, prev, pageInfo, next), table, detail);
  refresh();
  window.ssbStats.initMs = performance.now() - started;
})();
