"use strict";
// traceaudit report: findings table (filter, search, sort, paging), copy buttons, the census's
// capture selector, and links that open the sections they lead into.
// Data comes from #ta-data (JSON, or deflate+base64 when large); text goes in via textContent.
(function () {
  const PAGE = 200;
  const SEV = ["info", "warning", "error"];
  const state = { rows: null, order: [], shown: PAGE, sort: "sev", dir: -1, oneCap: false };
  let readyResolve;
  window.traceaudit = { ready: new Promise((r) => { readyResolve = r; }), state: state };

  async function loadData() {
    const el = document.getElementById("ta-data");
    if (!el) return null;
    if (el.dataset.encoding === "deflate-base64") {
      const bin = Uint8Array.from(atob(el.textContent.trim()), (c) => c.charCodeAt(0));
      const stream = new Blob([bin]).stream().pipeThrough(new DecompressionStream("deflate"));
      return JSON.parse(await new Response(stream).text());
    }
    return JSON.parse(el.textContent);
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function rel(D, i) {
    const c = D.rows.cap[i];
    return c >= 0 ? D.rows.ts[i] - D.first[c] : null;
  }

  function fmtRel(v) {
    if (v === null || v === undefined) return "";
    if (Math.abs(v) < 1) return "+" + (v * 1000).toFixed(1) + " ms";
    if (Math.abs(v) < 120) return "+" + v.toFixed(3) + " s";
    return "+" + (v / 60).toFixed(1) + " min";
  }

  function isoTime(ts) {
    return new Date(ts * 1000).toISOString().replace("T", " ").replace("Z", " UTC");
  }

  function copyText(text, button) {
    const done = () => { if (button) { button.classList.add("done"); button.textContent = "copied"; setTimeout(() => { button.classList.remove("done"); button.textContent = "copy"; }, 1500); } };
    const fallback = () => {
      const ta = document.createElement("textarea");
      ta.value = text; ta.setAttribute("readonly", ""); ta.style.position = "fixed"; ta.style.opacity = "0";
      document.body.appendChild(ta); ta.select();
      try { document.execCommand("copy"); done(); } catch (e) { /* nothing more to try */ }
      document.body.removeChild(ta);
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, fallback);
    } else {
      fallback();
    }
  }

  function haystack(D, i) {
    const r = D.rows, rule = D.rules[r.rule[i]];
    return [r.msg[i], r.host[i], rule[0], rule[1], D.captures[r.cap[i]] || "", r.ep[i],
      "stream " + r.conn[i], r.frames[i].join(" "), r.filter[i]].join(" ").toLowerCase();
  }

  function sortKey(D, k) {
    const r = D.rows;
    switch (k) {
      case "rule": return (i) => D.rules[r.rule[i]][0];
      case "cap": return (i) => D.captures[r.cap[i]] || "";
      case "conn": return (i) => (r.conn[i] === null ? -1 : r.conn[i]);
      default: return (i) => r[k][i];
    }
  }

  function applyFilters() {
    const D = state.data, r = D.rows, n = r.sev.length;
    const rule = document.getElementById("filter-rule").value;
    const sev = document.getElementById("filter-severity").value;
    const host = document.getElementById("filter-host").value;
    const words = document.getElementById("filter-search").value.toLowerCase().split(/\s+/).filter(Boolean);
    const ruleIx = rule ? D.rules.findIndex((x) => x[1] === rule) : -1;
    if (words.length && !state.hay) state.hay = Array.from({ length: n }, (_, i) => haystack(D, i));
    const out = [];
    for (let i = 0; i < n; i++) {
      if (rule && r.rule[i] !== ruleIx) continue;
      if (sev !== "" && r.sev[i] !== +sev) continue;
      if (host && r.host[i] !== host) continue;
      if (words.length) {
        const h = state.hay[i];
        if (!words.every((w) => h.includes(w))) continue;
      }
      out.push(i);
    }
    const key = sortKey(D, state.sort), dir = state.dir, ts = r.ts;
    out.sort((a, b) => {
      const x = key(a), y = key(b);
      if (x < y) return -dir;
      if (x > y) return dir;
      return ts[a] - ts[b] || a - b;
    });
    state.order = out;
    state.shown = PAGE;
    render();
  }

  function render() {
    const D = state.data, r = D.rows;
    const body = document.querySelector("#findings-table tbody");
    const frag = document.createDocumentFragment();
    const upto = Math.min(state.order.length, state.shown);
    for (let k = 0; k < upto; k++) {
      const i = state.order[k];
      const tr = el("tr", "row");
      tr.dataset.i = i;
      tr.dataset.rule = D.rules[r.rule[i]][1];
      tr.dataset.severity = SEV[r.sev[i]];
      const sev = el("td"); sev.appendChild(el("span", "badge sev-" + SEV[r.sev[i]], SEV[r.sev[i]]));
      tr.appendChild(sev);
      const rc = el("td"); rc.appendChild(el("code", null, D.rules[r.rule[i]][0])); rc.appendChild(document.createTextNode(" " + D.rules[r.rule[i]][1]));
      tr.appendChild(rc);
      const t = el("td", null, fmtRel(rel(D, i))); t.title = isoTime(r.ts[i]); tr.appendChild(t);
      if (!state.oneCap) { const c = el("td", "cap", D.captures[r.cap[i]] || ""); c.title = c.textContent; tr.appendChild(c); }
      tr.appendChild(el("td", "num", r.conn[i] === null ? "" : r.conn[i]));
      tr.appendChild(el("td", null, r.ep[i]));
      tr.appendChild(el("td", null, r.host[i]));
      const m = el("td", "msg"); m.appendChild(el("div", "clamp", r.msg[i])); m.title = r.msg[i];
      tr.appendChild(m);
      frag.appendChild(tr);
    }
    body.replaceChildren(frag);
    const total = r.sev.length, n = state.order.length;
    document.getElementById("findings-count").textContent =
      (n === total ? total.toLocaleString("en") + " findings" : n.toLocaleString("en") + " of " + total.toLocaleString("en") + " findings match") +
      (upto < n ? " (showing " + upto.toLocaleString("en") + ")" : "") +
      (D.all > total ? "; the table lists " + total.toLocaleString("en") + " of " + D.all.toLocaleString("en") : "");
    const more = document.getElementById("findings-more");
    more.hidden = upto >= n;
    more.textContent = "show " + Math.min(PAGE, n - upto) + " more";
    document.querySelectorAll("#findings-table th[data-sort]").forEach((th) => {
      th.classList.toggle("asc", th.dataset.sort === state.sort && state.dir > 0);
      th.classList.toggle("desc", th.dataset.sort === state.sort && state.dir < 0);
    });
  }

  function expand(tr) {
    const next = tr.nextElementSibling;
    if (next && next.classList.contains("more")) { next.remove(); return; }
    const D = state.data, r = D.rows, i = +tr.dataset.i, rule = D.rules[r.rule[i]];
    const row = el("tr", "more"), td = el("td");
    td.colSpan = document.querySelectorAll("#findings-table thead th").length;
    td.appendChild(el("p", "msg", r.msg[i]));
    const dl = el("dl", "facts");
    const add = (k, v) => { dl.appendChild(el("dt", null, k)); const dd = el("dd"); if (v instanceof Node) dd.appendChild(v); else dd.textContent = v; dl.appendChild(dd); return dd; };
    add("rule", rule[0] + " " + rule[1] + ": " + rule[2]);
    add("when", isoTime(r.ts[i]));
    if (r.frames[i].length) add("frames", r.frames[i].join(", "));
    if (r.filter[i]) {
      const dd = add("Wireshark filter", el("code", "filter", r.filter[i]));
      const b = el("button", "copy", "copy"); b.type = "button"; b.dataset.copy = r.filter[i];
      dd.appendChild(document.createTextNode(" ")); dd.appendChild(b);
    }
    const links = el("dd");
    if (r.det[i]) { const a = el("a", null, "evidence and ladder diagram ↓"); a.href = "#f" + r.id[i]; links.appendChild(a); }
    else links.appendChild(el("span", "muted", "evidence not drawn (the detailed sections are capped); "));
    const ra = el("a", null, " why it matters and the fix"); ra.href = "#rule-" + rule[1]; links.appendChild(ra);
    dl.appendChild(el("dt", null, "more")); dl.appendChild(links);
    td.appendChild(dl);
    row.appendChild(td);
    tr.after(row);
  }

  function bind() {
    ["filter-rule", "filter-severity", "filter-host"].forEach((id) =>
      document.getElementById(id).addEventListener("change", applyFilters));
    let timer = null;
    document.getElementById("filter-search").addEventListener("input", () => {
      clearTimeout(timer); timer = setTimeout(applyFilters, 120);
    });
    document.querySelectorAll("#findings-table th[data-sort]").forEach((th) =>
      th.addEventListener("click", () => {
        const k = th.dataset.sort;
        state.dir = state.sort === k ? -state.dir : (k === "sev" ? -1 : 1);
        state.sort = k;
        applyFilters();
      }));
    document.getElementById("findings-more").addEventListener("click", () => { state.shown += PAGE; render(); });
    document.querySelector("#findings-table tbody").addEventListener("click", (ev) => {
      const tr = ev.target.closest("tr.row");
      if (tr && !ev.target.closest("a,button")) expand(tr);
    });
    document.querySelectorAll(".rule-link").forEach((a) => a.addEventListener("click", () => {
      const sel = document.getElementById("filter-rule");
      sel.value = a.dataset.rule;
      if (sel.value !== a.dataset.rule) sel.value = "";
      applyFilters();
    }));
  }

  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("button.copy");
    if (b) copyText(b.dataset.copy, b);
    const a = ev.target.closest("a[href^='#']");
    if (a) reveal(a.getAttribute("href").slice(1));
  });

  // open the closed sections (<details>) around a link's target before the page jumps to it
  function reveal(id) {
    const t = id && document.getElementById(decodeURIComponent(id));
    for (let e = t; e; e = e.parentElement) if (e.tagName === "DETAILS") e.open = true;
    if (t && t.firstElementChild && t.firstElementChild.tagName === "DETAILS") t.firstElementChild.open = true;
  }
  window.addEventListener("hashchange", () => reveal(location.hash.slice(1)));
  // a printed (or saved as PDF) report holds everything
  window.addEventListener("beforeprint", () => document.querySelectorAll("details").forEach((d) => { d.open = true; }));

  function bindCensus() {
    const sel = document.getElementById("census-capture");
    if (!sel) return;
    sel.addEventListener("change", () => document.querySelectorAll("figure.census").forEach((f) => {
      f.hidden = f.dataset.census !== sel.value;
    }));
  }

  async function main() {
    try {
      bindCensus();
      if (location.hash) reveal(location.hash.slice(1));
      state.data = await loadData();
      if (state.data) {
        // one capture: its name in every row says nothing, so the column goes
        state.oneCap = state.data.captures.length < 2;
        if (state.oneCap) document.querySelectorAll("#findings-table .c-cap, #findings-table th[data-sort=cap]").forEach((e) => e.remove());
        bind(); applyFilters();
      }
    } finally {
      readyResolve(true);
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
  else main();
})();
