"use strict";
// Sortable tables, leaderboard filters and the flip explorer. Untrusted text (completions,
// prompts, stderr) is only ever inserted with textContent.
function sortTable(th) {
  const table = th.closest("table"), body = table.tBodies[0];
  const col = Array.from(th.parentNode.children).indexOf(th);
  const asc = th.dataset.dir !== "asc";
  table.querySelectorAll("th").forEach(h => delete h.dataset.dir);
  th.dataset.dir = asc ? "asc" : "desc";
  const key = tr => {
    const td = tr.children[col], v = td.dataset.sort !== undefined ? td.dataset.sort : td.textContent;
    const num = parseFloat(v);
    return isNaN(num) ? v.toLowerCase() : num;
  };
  const rows = Array.from(body.rows);
  rows.sort((a, b) => { const x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (asc ? 1 : -1); });
  rows.forEach(r => body.appendChild(r));
}
document.querySelectorAll("th.sortable").forEach(th => th.addEventListener("click", () => sortTable(th)));

document.querySelectorAll(".filters").forEach(box => {
  const table = document.getElementById(box.dataset.table);
  box.querySelectorAll("button").forEach(btn => btn.addEventListener("click", () => {
    box.querySelectorAll("button").forEach(b => b.classList.toggle("on", b === btn));
    const fam = btn.dataset.family;
    table.querySelectorAll("tbody tr").forEach(tr => {
      tr.hidden = fam !== "all" && tr.dataset.family !== fam;
    });
  }));
});

async function decode(b64) {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return JSON.parse(await new Response(stream).text());
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function sideBox(label, side) {
  const box = el("div");
  box.appendChild(el("strong", label));
  if (!side) { box.appendChild(el("div", "(no sample stored)", "muted")); return box; }
  box.appendChild(el("pre", side.completion, "completion"));
  const meta = [];
  if (side.finish) meta.push("finish: " + side.finish);
  if (side.status) meta.push("sandbox: " + side.status);
  if (side.n > 1) meta.push(side.n + " samples");
  if (side.extracted) meta.push("extracted: " + side.extracted);
  if (meta.length) box.appendChild(el("div", meta.join(" · "), "muted"));
  if (side.stderr) { box.appendChild(el("div", "stderr:", "muted")); box.appendChild(el("pre", side.stderr, "stderr")); }
  return box;
}

function renderFlip(item) {
  const card = el("div", null, "flip");
  card.dataset.task = item.task; card.dataset.dir = item.dir;
  card.appendChild(el("h4", item.task + " / " + item.doc + " — " + item.dir));
  const m = Object.entries(item.metrics).map(([k, v]) => k + ": " + v[0] + " (" + v[1] + " → " + v[2] + ")");
  card.appendChild(el("div", m.join("; "), "muted"));
  const det = el("details"); det.appendChild(el("summary", "prompt and target"));
  det.appendChild(el("pre", item.prompt)); det.appendChild(el("div", "target:", "muted"));
  det.appendChild(el("pre", item.target)); card.appendChild(det);
  const sides = el("div", null, "sides");
  sides.appendChild(sideBox("base", item.base)); sides.appendChild(sideBox("tuned", item.tuned));
  card.appendChild(sides);
  return card;
}

const PAGE = 25;
document.querySelectorAll(".flip-explorer").forEach(async box => {
  const items = await decode(box.querySelector("script.flip-data").textContent.trim());
  const list = box.querySelector(".flip-list"), count = box.querySelector(".flip-count");
  const more = box.querySelector(".flip-more"), text = box.querySelector(".flip-text");
  const state = {task: "all", dir: "all", q: "", shown: PAGE};
  const matches = it => (state.task === "all" || it.task === state.task)
    && (state.dir === "all" || it.dir === state.dir)
    && (!state.q || [it.doc, it.prompt, it.target, it.base && it.base.completion, it.tuned && it.tuned.completion]
        .some(s => s && s.toLowerCase().includes(state.q)));
  function draw() {
    const hits = items.filter(matches);
    list.replaceChildren(...hits.slice(0, state.shown).map(renderFlip));
    count.textContent = Math.min(hits.length, state.shown) + " of " + hits.length + " shown";
    more.hidden = hits.length <= state.shown;
  }
  box.querySelectorAll(".flip-controls button[data-k]").forEach(btn => btn.addEventListener("click", () => {
    box.querySelectorAll(`.flip-controls button[data-k="${btn.dataset.k}"]`).forEach(b => b.classList.toggle("on", b === btn));
    state[btn.dataset.k] = btn.dataset.v; state.shown = PAGE; draw();
  }));
  text.addEventListener("input", () => { state.q = text.value.toLowerCase(); state.shown = PAGE; draw(); });
  more.addEventListener("click", () => { state.shown += PAGE; draw(); });
  draw();
  box.dataset.ready = "1";
});
