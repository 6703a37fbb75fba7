// The page of `multistore serve`: plain DOM, no build step. The token stays in sessionStorage.
"use strict";

const KEY = "multistore-token";
const $ = (id) => document.getElementById(id);
let current = null;      // the job shown below
let stream = null;       // AbortController of its event stream
const quicklooks = new Map();  // url -> object URL

function token() { return sessionStorage.getItem(KEY); }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, { Authorization: "Bearer " + token() });
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) { sessionStorage.removeItem(KEY); showLogin("the token was refused"); throw new Error("401"); }
  return response;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function showLogin(message) {
  $("app").hidden = true; $("login").hidden = false; $("login-error").textContent = message || "";
}

async function start() {
  $("login").hidden = true; $("app").hidden = false;
  await refreshJobs();
  setInterval(refreshJobs, 2000);
}

async function refreshJobs() {
  const body = await (await api("/api/jobs")).json();
  const tbody = $("jobs").querySelector("tbody");
  tbody.replaceChildren(...body.jobs.map((job) => {
    const row = el("tr", { "data-job": job.id, class: job.id === current ? "selected" : "" },
      el("td", { text: job.name }),
      el("td", { class: "status status-" + job.status, text: job.status }),
      el("td", { text: new Date(job.created * 1000).toLocaleString() }));
    row.addEventListener("click", () => select(job.id));
    return row;
  }));
}

function lineOf(problem) {
  const m = / \(line (\d+)\)$/.exec(problem.message);
  return m ? Number(m[1]) : null;
}

async function submit(event) {
  event.preventDefault();
  const problems = $("problems");
  problems.replaceChildren();
  const datasets = $("datasets").value.split(",").map((s) => s.trim()).filter(Boolean);
  const payload = { config: $("config").value, force: $("force").checked, name: $("config-file").files[0]?.name || "pasted config" };
  if (datasets.length) payload.datasets = datasets;
  const response = await api("/api/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });
  const body = await response.json();
  if (response.status !== 201) {
    const list = body.problems || [{ location: "", message: body.error }];
    problems.replaceChildren(...list.map((p) => {
      const line = lineOf(p);
      const message = line ? p.message.replace(/ \(line \d+\)$/, "") : p.message;
      return el("li", { "data-line": line ?? "" }, el("strong", { text: line ? `line ${line}` : "config" }), ` ${p.location}: ${message}`);
    }));
    return;
  }
  await refreshJobs();
  select(body.id);
}

function datasetRow(d) {
  const tbody = $("datasets-table").querySelector("tbody");
  let row = tbody.querySelector(`tr[data-dataset="${CSS.escape(d.identifier)}"]`);
  if (!row) {
    row = el("tr", { "data-dataset": d.identifier },
      el("td", { text: d.identifier }), el("td", { class: "status" }), el("td", {}, el("progress", { max: "1" })),
      el("td", { class: "message" }), el("td", { class: "cube" }));
    tbody.append(row);
  }
  const cells = row.children;
  cells[1].textContent = d.status; cells[1].className = "status status-" + d.status;
  const bar = cells[2].firstChild;
  if (d.progress === null || d.progress === undefined) {
    if (["completed", "skipped"].includes(d.status)) bar.value = 1; else bar.removeAttribute("value");
    bar.hidden = !["writing", "preloading", "completed", "skipped"].includes(d.status);
  } else { bar.hidden = false; bar.value = d.progress; }
  cells[3].textContent = (d.message || "") + (d.bytes ? ` · ${(d.bytes / 1e6).toFixed(2)} MB on disk` : "");
  if (d.cube) {
    const url = location.origin + d.cube;
    cells[4].replaceChildren(el("a", { href: url, text: d.cube.split("/").pop() }), el("br"),
      el("code", { text: `xr.open_zarr("${url}", storage_options={"headers": {"Authorization": "Bearer <token>"}})` }));
  }
  if (d.quicklook) showQuicklook(d.identifier, d.quicklook);
}

async function showQuicklook(identifier, url) {
  if (quicklooks.has(url)) return;
  quicklooks.set(url, null);
  const response = await api(url);
  if (!response.ok) { quicklooks.delete(url); return; }
  const src = URL.createObjectURL(await response.blob());
  quicklooks.set(url, src);
  $("quicklooks").append(el("figure", {}, el("img", { src, alt: "quick-look of " + identifier, "data-quicklook": identifier }),
    el("figcaption", { text: identifier })));
}

function showJob(job) {
  $("job-name").textContent = job.name;
  $("job-status").textContent = job.status;
  $("job-status").className = "status status-" + job.status;
  $("job-message").textContent = job.message || "";
  $("cancel").hidden = !["queued", "running"].includes(job.status);
}

async function select(id) {
  if (stream) stream.abort();
  current = id;
  for (const row of $("jobs").querySelectorAll("tbody tr")) row.classList.toggle("selected", row.dataset.job === id);
  $("job-section").hidden = false; $("log").hidden = true;
  $("datasets-table").querySelector("tbody").replaceChildren();
  $("quicklooks").replaceChildren();
  quicklooks.clear();
  const job = await (await api(`/api/jobs/${id}`)).json();
  showJob(job);
  job.datasets.forEach(datasetRow);
  follow(id);
}

// Server-sent events through fetch (EventSource cannot send the Authorization header).
async function follow(id) {
  const controller = new AbortController();
  stream = controller;
  let response;
  try { response = await api(`/api/jobs/${id}/events`, { signal: controller.signal }); } catch (e) { return; }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end); buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (data && current === id) await handle(id, JSON.parse(data));
      }
    }
  } catch (e) { if (e.name !== "AbortError") throw e; }
}

async function handle(id, event) {
  if (event.type === "dataset") { datasetRow(event); return; }
  const job = await (await api(`/api/jobs/${id}`)).json();   // final rows carry cube links
  showJob(job);
  job.datasets.forEach(datasetRow);
  refreshJobs();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("token").value.trim());
  $("token").value = "";
  try { await start(); } catch (e) { /* showLogin was called */ }
});
$("submit-form").addEventListener("submit", submit);
$("config-file").addEventListener("change", async () => {
  const file = $("config-file").files[0];
  if (file) $("config").value = await file.text();
});
$("cancel").addEventListener("click", async () => { if (current) await api(`/api/jobs/${current}/cancel`, { method: "POST" }); });
$("show-log").addEventListener("click", async () => {
  if (!current) return;
  $("log").textContent = await (await api(`/api/jobs/${current}/log`)).text();
  $("log").hidden = false;
});

if (token()) start().catch(() => {}); else showLogin();
