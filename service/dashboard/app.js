// The Distillery dashboard: the jobs table, one job's live curves and outputs, several jobs
// side by side, and sweeps (their leaderboard and each run's curve). A plain ES module with no
// build step; Chart.js (vendor/, a global) is the one library. Every request carries the key
// the user typed (kept in localStorage) as `Authorization: Bearer`: the page itself holds no
// data.

const KEY = "distillery.key";
const TERMINAL = new Set(["succeeded", "failed", "cancelled", "pruned"]);
const SWEEP_ENDED = new Set(["succeeded", "failed", "cancelled"]);
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];
const GREY = "#c4c4cc"; // a pruned trial's curve
const view = document.getElementById("view");
let stopView = () => {};

// ---- the API -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
  }
}

async function api(path) {
  const key = localStorage.getItem(KEY);
  const response = await fetch(path, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  if (response.ok) return response;
  const problem = await response.json().catch(() => ({}));
  const detail = problem.detail || response.statusText;
  if (response.status === 401 || response.status === 403) askForKey(key ? detail : null);
  throw new ApiError(response.status, detail);
}

const getJson = async (path) => (await api(path)).json();
const jobPath = (id) => `/v1/jobs/${encodeURIComponent(id)}`;
const artifactPath = (id, name) =>
  `${jobPath(id)}/artifacts/${name.split("/").map(encodeURIComponent).join("/")}`;

async function allEvents(id) {
  const events = [];
  for (let after = 0; ;) {
    const page = await getJson(`${jobPath(id)}/events?after=${after}&limit=1000`);
    events.push(...page.data);
    if (page.data.length < 1000) return events;
    after = page.next_after;
  }
}

async function download(id, name) {
  const blob = await (await api(artifactPath(id, name))).blob();
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name.split("/").pop() });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// ---- the key and errors --------------------------------------------------------------------

// `refusal`: why the API refused the key this browser sent; null when it sent none.
function askForKey(refusal) {
  document.getElementById("key-missing").hidden = refusal != null;
  const refused = document.getElementById("key-refused");
  refused.hidden = refusal == null;
  refused.textContent = `The API refused the key this browser sent (${refusal}). Paste another.`;
  document.getElementById("key-prompt").hidden = false;
  document.getElementById("key").focus();
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("key");
  localStorage.setItem(KEY, input.value.trim());
  input.value = "";
  document.getElementById("key-prompt").hidden = true;
  route();
});

function showError(error) {
  const box = document.getElementById("error");
  box.hidden = error instanceof ApiError && (error.status === 401 || error.status === 403);
  box.textContent = String(error.message || error);
}

const hideError = () => (document.getElementById("error").hidden = true);

// ---- small DOM and format helpers ----------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else if (value !== false && value != null) node.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) if (child != null) node.append(child);
  return node;
}

const pct = (x) => (x == null ? "–" : `${(100 * x).toFixed(1)}%`);
const epochsText = (x) => String(Math.round(100 * x) / 100); // 4, 1.25
const num = (x) => (x == null ? "–" : Number(x).toPrecision(4));
const badge = (status) => el("span", { class: `status ${status}` }, status);
const jobLink = (id) => el("a", { href: `#/jobs/${id}` }, id);
const sweepPath = (id) => `/v1/sweeps/${encodeURIComponent(id)}`;
const sweepLink = (id) => el("a", { href: `#/sweeps/${id}` }, id);

function duration(seconds) {
  if (seconds == null) return "–";
  const s = Math.round(seconds);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

function teacherOf(job) {
  if (job.teacher_job_id) return jobLink(job.teacher_job_id);
  return job.teacher_model_id || "–";
}

// The API's best epoch so far (from the recorded epochs), whatever state the job is in.
const bestAccuracy = (job) => job.best?.val_acc ?? job.result?.metrics?.best?.val_acc;

// Where the job is: epochs done (or in progress) of the total, and the fraction of the run.
function progressOf(job) {
  const p = job.progress || {};
  const epochs = p.epochs ?? job.spec?.train?.epochs;
  if (job.status === "succeeded") return { epoch: epochs, epochs, fraction: 1, p };
  const epoch = p.epoch ?? 0;
  const within = p.steps_per_epoch ? (p.step ?? 0) / p.steps_per_epoch : 0;
  const fraction = epochs ? Math.min(1, (Math.max(epoch - 1, 0) + within) / epochs) : 0;
  return { epoch, epochs, fraction, p };
}

function progressBar(job) {
  const { epoch, epochs, fraction, p } = progressOf(job);
  const eta = !TERMINAL.has(job.status) && p.eta_s != null ? ` · ${duration(p.eta_s)} left` : "";
  return el(
    "div",
    { class: "progress" },
    el("progress", { max: 1, value: fraction }),
    el("span", {}, `${epoch}/${epochs ?? "?"}${eta}`),
  );
}

// Calls `tick` now and every `ms` until the view stops or `tick` returns true (done).
function poll(tick, ms) {
  let timer;
  let stopped = false;
  const run = async () => {
    let done = false;
    try {
      done = await tick();
      if (!stopped) hideError();
    } catch (error) {
      if (!stopped) showError(error); // a tick that ends after its view left says nothing
    }
    if (!stopped && !done) timer = setTimeout(run, ms);
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ---- charts --------------------------------------------------------------------------------

function chart(id, title) {
  const canvas = el("canvas");
  const box = el("div", { class: "chart", id, "data-points": 0 }, canvas);
  const instance = new Chart(canvas, {
    type: "line",
    data: { labels: [], datasets: [] },
    options: {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      plugins: { title: { display: true, text: title } },
      scales: { x: { title: { display: true, text: "epoch" } } },
    },
  });
  return { box, instance };
}

// series: [{label, data: [y per epoch], dashed, color}]; the box's data-points counts the
// epochs.
function plot({ box, instance }, epochs, series) {
  instance.data.labels = epochs;
  instance.data.datasets = series.map((s, i) => ({
    label: s.label,
    data: s.data,
    borderColor: s.color ?? COLORS[i % COLORS.length],
    backgroundColor: s.color ?? COLORS[i % COLORS.length],
    borderDash: s.dashed ? [6, 4] : [],
    pointRadius: 3, // a reference line of one epoch is a point
  }));
  instance.update();
  box.dataset.points = epochs.length;
}

// Each epoch's metrics, in epoch order; for an epoch a later attempt trained again (it resumed
// from an older checkpoint), that attempt's.
function metricsOf(events) {
  const byEpoch = new Map();
  for (const e of events) if (e.type === "metrics") byEpoch.set(e.data.epoch, e);
  const latest = [...byEpoch.values()].sort((a, b) => a.data.epoch - b.data.epoch);
  return latest.map((e) => e.data);
}
const lossTerms = (rows) =>
  [...new Set(rows.flatMap(Object.keys))].filter((k) => k.startsWith("train_") || k === "val_loss");

// ---- the jobs table ------------------------------------------------------------------------

const selected = new Set();

function jobRow(job) {
  const box = el("input", { type: "checkbox", checked: selected.has(job.id) });
  box.addEventListener("change", () =>
    box.checked ? selected.add(job.id) : selected.delete(job.id),
  );
  return el(
    "tr",
    { "data-job": job.id, "data-status": job.status },
    el("td", {}, box),
    el("td", {}, jobLink(job.id)),
    el("td", {}, job.name),
    el("td", {}, badge(job.status)),
    el("td", {}, job.method),
    el("td", {}, job.spec?.student?.arch ?? "–"),
    el("td", {}, teacherOf(job)),
    el("td", {}, progressBar(job)),
    el("td", { class: "num" }, pct(bestAccuracy(job))),
  );
}

function jobsView() {
  const head = [
    "",
    "job",
    "name",
    "status",
    "method",
    "student",
    "teacher",
    "progress",
    "best acc",
  ];
  const body = el("tbody");
  const compare = () => (location.hash = `#/compare?jobs=${[...selected].join(",")}`);
  view.replaceChildren(
    el("h1", {}, "Jobs"),
    el(
      "table",
      { id: "jobs" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          head.map((h) => el("th", {}, h)),
        ),
      ),
      body,
    ),
    el("button", { onclick: compare }, "Compare selected"),
  );
  return poll(async () => {
    const page = await getJson("/v1/jobs?limit=100");
    body.replaceChildren(...page.data.map(jobRow));
    if (!page.data.length)
      body.append(el("tr", {}, el("td", { colspan: head.length }, "No jobs yet.")));
  }, 2000);
}

// ---- one job -------------------------------------------------------------------------------

// The student's scratch baseline: a succeeded supervised run of the same architecture on the
// same data, when the project has one.
async function scratchBaseline(job) {
  const { student, data } = job.spec;
  const page = await getJson("/v1/jobs?status=succeeded&limit=200");
  return page.data.find(
    (j) =>
      j.id !== job.id &&
      j.method === "supervised" &&
      j.spec.student.arch === student.arch &&
      j.spec.data.dataset === data.dataset &&
      j.spec.data.upload === data.upload,
  );
}

function summary(job) {
  const { p } = progressOf(job);
  const rows = [
    ["id", job.id],
    ["method", job.method],
    ["student", job.spec.student.arch],
    ["teacher", teacherOf(job)],
    ["dataset", job.spec.data.upload || job.spec.data.dataset],
    ["progress", progressBar(job)],
    ["phase", p.phase ?? "–"],
    ["images/s", p.images_per_s == null ? "–" : Math.round(p.images_per_s)],
    ["attempt", `${job.attempt}/${job.max_attempts}`],
  ];
  if (job.sweep_id) rows.push(["sweep", sweepLink(job.sweep_id)]);
  if (job.error) rows.push(["error", `${job.error.code}: ${job.error.message}`]);
  return el(
    "dl",
    { class: "summary" },
    rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]),
  );
}

function accuracyCards(job, teacherAcc, baseline) {
  const card = (label, value, note) =>
    el(
      "div",
      { class: "card" },
      el("div", { class: "label" }, label),
      el("div", { class: "value" }, value),
      note,
    );
  const cards = [
    card("student best val_acc", pct(bestAccuracy(job))),
    teacherAcc == null
      ? null
      : card("teacher val_acc", pct(teacherAcc), el("small", {}, "on this job's split")),
    baseline == null
      ? null
      : card(
          "scratch baseline",
          pct(bestAccuracy(baseline)),
          el("small", {}, jobLink(baseline.id)),
        ),
  ];
  return cards.filter(Boolean);
}

function eventItem(event) {
  const time = event.created_at.slice(11, 19);
  const epoch = event.type === "metrics" ? event.data.epoch : null;
  return el(
    "li",
    { "data-type": event.type, "data-epoch": epoch, "data-attempt": event.attempt },
    el("time", {}, time),
    el("b", {}, event.type),
    event.message,
    event.attempt > 1 && epoch != null ? ` (attempt ${event.attempt})` : null,
  );
}

// Append a page of events to the feed; an epoch's metrics from a later attempt replace the
// earlier attempt's line.
function appendEvents(list, events) {
  for (const event of events) {
    const item = eventItem(event);
    if (item.dataset.epoch) list.querySelector(`li[data-epoch="${item.dataset.epoch}"]`)?.remove();
    list.append(item);
  }
}

function artifactTable(id, artifacts) {
  const row = (a) =>
    el(
      "tr",
      {},
      el("td", {}, a.name),
      el("td", {}, a.kind),
      el("td", { class: "num" }, `${(a.size / 1024).toFixed(1)} KiB`),
      el("td", {}, el("code", { title: a.sha256 }, a.sha256.slice(0, 12))),
      el(
        "td",
        {},
        el(
          "button",
          { "data-download": a.name, onclick: () => download(id, a.name).catch(showError) },
          "Download",
        ),
      ),
    );
  return el("table", { id: "artifacts" }, el("tbody", {}, artifacts.map(row)));
}

function modelCard(card) {
  const rows = [
    ["architecture", card.architecture],
    ["parameters", card.parameters?.toLocaleString()],
    ["best val_acc", `${pct(card.metrics?.best?.val_acc)} (epoch ${card.metrics?.best?.epoch})`],
    ["final val_acc", pct(card.metrics?.final?.val_acc)],
    ["teacher", card.teacher ? `${card.teacher.architecture} · ${pct(card.teacher.val_acc)}` : "–"],
    ["device", `${card.device} · ${card.precision}`],
    ["warnings", (card.warnings || []).join("; ") || "–"],
  ];
  return [
    el(
      "dl",
      { class: "summary" },
      rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "–")]),
    ),
    el(
      "details",
      {},
      el("summary", {}, "model.json"),
      el("pre", {}, JSON.stringify(card, null, 2)),
    ),
  ];
}

function jobView(id) {
  const parts = {
    title: el("h1"),
    summary: el("div"),
    cards: el("div", { class: "cards" }),
    events: el("ol", { id: "events" }),
    outputs: el("section", { id: "outputs" }),
  };
  const loss = chart("loss-chart", "loss terms");
  const acc = chart("acc-chart", "validation accuracy");
  view.replaceChildren(
    parts.title,
    parts.summary,
    parts.cards,
    el("div", { class: "charts" }, loss.box, acc.box),
    el("h2", {}, "Events"),
    parts.events,
    parts.outputs,
  );
  const events = [];
  let after = 0;
  let baseline;
  const stop = poll(async () => {
    const job = await getJson(jobPath(id));
    const page = await getJson(`${jobPath(id)}/events?after=${after}&limit=1000`);
    events.push(...page.data);
    appendEvents(parts.events, page.data);
    if (page.data.length) parts.events.scrollTop = parts.events.scrollHeight;
    after = page.next_after;
    if (baseline === undefined && (job.teacher_job_id || job.teacher_model_id)) {
      baseline = (await scratchBaseline(job)) ?? null;
    }
    const teacherAcc =
      job.result?.teacher?.val_acc ?? events.find((e) => e.type === "teacher")?.data.val_acc;
    parts.title.replaceChildren(job.name, " ", badge(job.status));
    parts.summary.replaceChildren(summary(job));
    parts.cards.replaceChildren(...accuracyCards(job, teacherAcc, baseline));
    drawJob(loss, acc, metricsOf(events), teacherAcc, baseline);
    const done = TERMINAL.has(job.status) && page.data.length === 0;
    if (done) await showOutputs(id, parts.outputs);
    return done;
  }, 500);
  return () => {
    stop();
    loss.instance.destroy();
    acc.instance.destroy();
  };
}

function drawJob(loss, acc, rows, teacherAcc, baseline) {
  const epochs = rows.map((r) => r.epoch);
  const flat = (value) => epochs.map(() => value);
  plot(
    loss,
    epochs,
    lossTerms(rows).map((k) => ({ label: k, data: rows.map((r) => r[k]) })),
  );
  const lines = [{ label: "student val_acc", data: rows.map((r) => r.val_acc) }];
  if (teacherAcc != null) lines.push({ label: "teacher", data: flat(teacherAcc), dashed: true });
  if (baseline)
    lines.push({ label: "scratch baseline", data: flat(bestAccuracy(baseline)), dashed: true });
  plot(acc, epochs, lines);
}

async function showOutputs(id, section) {
  const artifacts = (await getJson(`${jobPath(id)}/artifacts`)).data;
  const card = artifacts.find((a) => a.kind === "model_card");
  const cardBody = card ? modelCard(await getJson(artifactPath(id, card.name))) : "No model card.";
  section.replaceChildren(
    el("h2", {}, "Artifacts"),
    artifacts.length ? artifactTable(id, artifacts) : el("p", {}, "No artifacts."),
    el("h2", {}, "Model card"),
    el("div", { id: "model-card" }, cardBody),
  );
}

// ---- compare -------------------------------------------------------------------------------

const COMPARED = [
  ["status", (j) => badge(j.status)],
  ["method", (j) => j.method],
  ["method params", (j) => el("code", {}, JSON.stringify({ ...j.spec.method, name: undefined }))],
  ["student", (j) => j.spec.student.arch],
  ["teacher", teacherOf],
  ["dataset", (j) => j.spec.data.upload || j.spec.data.dataset],
  ["epochs", (j) => j.spec.train.epochs],
  ["batch size", (j) => j.spec.train.batch_size],
  ["lr", (j) => j.spec.train.optimizer?.lr],
  ["best val_acc", (j) => pct(bestAccuracy(j))],
  ["final val_acc", (j) => pct(j.result?.metrics?.final?.val_acc ?? j.metrics?.val_acc)],
  ["final train_loss", (j) => num(j.result?.metrics?.final?.train_loss ?? j.metrics?.train_loss)],
  ["teacher val_acc", (j) => pct(j.result?.teacher?.val_acc)],
];

function comparePicker() {
  const input = el("input", { id: "compare-ids", placeholder: "job_…, job_…", size: 60 });
  const go = (event) => {
    event.preventDefault();
    location.hash = `#/compare?jobs=${input.value.replace(/\s+/g, "")}`;
  };
  view.replaceChildren(
    el("h1", {}, "Compare jobs"),
    el("p", {}, "Tick jobs in the jobs table, or list their ids:"),
    el("form", { onsubmit: go }, input, el("button", { type: "submit" }, "Compare")),
  );
  return () => {};
}

function compareView(ids) {
  if (!ids.length) return comparePicker();
  const table = el("table", { id: "compare" });
  const acc = chart("compare-acc", "validation accuracy");
  const loss = chart("compare-loss", "train_loss");
  view.replaceChildren(
    el("h1", {}, "Compare jobs"),
    table,
    el("div", { class: "charts" }, acc.box, loss.box),
  );
  const stop = poll(async () => {
    const jobs = await Promise.all(ids.map((id) => getJson(jobPath(id))));
    const rows = await Promise.all(ids.map(async (id) => metricsOf(await allEvents(id))));
    const head = el(
      "tr",
      {},
      el("th"),
      jobs.map((j) => el("th", {}, jobLink(j.id), el("br"), j.name)),
    );
    const body = COMPARED.map(([label, get]) =>
      el(
        "tr",
        {},
        el("th", {}, label),
        jobs.map((j) => el("td", {}, get(j))),
      ),
    );
    table.replaceChildren(el("thead", {}, head), el("tbody", {}, body));
    const epochs = Array.from(
      { length: Math.max(0, ...rows.map((r) => r.length)) },
      (_, i) => i + 1,
    );
    const byEpoch = (r, key) => epochs.map((e) => r.find((m) => m.epoch === e)?.[key] ?? null);
    plot(
      acc,
      epochs,
      rows.map((r, i) => ({ label: ids[i], data: byEpoch(r, "val_acc") })),
    );
    plot(
      loss,
      epochs,
      rows.map((r, i) => ({ label: ids[i], data: byEpoch(r, "train_loss") })),
    );
    return jobs.every((j) => TERMINAL.has(j.status));
  }, 3000);
  return () => {
    stop();
    acc.instance.destroy();
    loss.instance.destroy();
  };
}

// ---- sweeps --------------------------------------------------------------------------------

// "97.12 ± 0.40%": val_acc over a configuration's seeds (sample std).
function meanStd(runs) {
  if (runs?.mean == null) return "–";
  const spread = runs.std == null ? "" : ` ± ${(100 * runs.std).toFixed(2)}`;
  return `${(100 * runs.mean).toFixed(2)}${spread}%`;
}

const paramsText = (params) =>
  Object.entries(params)
    .map(([k, v]) => `${k}=${v}`)
    .join("  ") || "(the base)";

const headRow = (names) => el("thead", {}, el("tr", {}, names.map((h) => el("th", {}, h))));

function sweepsView() {
  const head = ["sweep", "name", "status", "phase", "trials", "best val_acc"];
  const body = el("tbody");
  view.replaceChildren(el("h1", {}, "Sweeps"), el("table", { id: "sweeps" }, headRow(head), body));
  const row = (s) =>
    el(
      "tr",
      { "data-sweep": s.id },
      el("td", {}, sweepLink(s.id)),
      el("td", {}, s.name),
      el("td", {}, badge(s.status)),
      el("td", {}, s.phase),
      el("td", { class: "num" }, Object.values(s.counts).reduce((a, b) => a + b, 0)),
      el("td", { class: "num" }, meanStd(s.leaderboard[0])),
    );
  return poll(async () => {
    const page = await getJson("/v1/sweeps?limit=100");
    body.replaceChildren(...page.data.map(row));
    if (!page.data.length)
      body.append(el("tr", {}, el("td", { colspan: head.length }, "No sweeps yet.")));
  }, 2000);
}

function sweepSummary(sweep) {
  const counts = Object.entries(sweep.counts).map(([status, n]) => `${n} ${status}`);
  const c = sweep.compute;
  const saved = c.epochs_unpruned
    ? ` (${Math.round(100 * (1 - c.epochs / c.epochs_unpruned))}% saved by pruning)`
    : "";
  const rows = [
    ["id", sweep.id],
    ["phase", sweep.phase],
    ["trials", counts.join(", ") || "none yet"],
    ["search", `${sweep.spec.sampler}, pruner ${sweep.spec.pruner.name}`],
    ["compute", `${epochsText(c.epochs)} of ${epochsText(c.epochs_unpruned)} epochs${saved}`],
  ];
  if (sweep.error) rows.push(["error", sweep.error.message]);
  return el(
    "dl",
    { class: "summary" },
    rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]),
  );
}

function leaderboardTable(sweep) {
  const row = (rank, runs, params) =>
    el(
      "tr",
      { "data-rank": rank },
      el("td", {}, rank),
      el("td", { class: "num" }, meanStd(runs)),
      el("td", {}, runs.seeds.join(", ")),
      el("td", {}, el("code", {}, params)),
      el("td", {}, runs.jobs.map((id) => [jobLink(id), " "])),
    );
  const rows = sweep.leaderboard.map((r, i) => row(String(i + 1), r, paramsText(r.params)));
  if (sweep.baseline) rows.push(row("scratch", sweep.baseline, "supervised, no teacher"));
  const head = headRow(["#", "val_acc", "seeds", "params", "jobs"]);
  return el("table", { id: "leaderboard" }, head, el("tbody", {}, rows));
}

function trialsTable(sweep) {
  const row = (t) =>
    el(
      "tr",
      {
        "data-run": `${t.kind}-${t.number}`,
        "data-status": t.status,
        class: t.status === "pruned" ? "pruned" : null,
      },
      el("td", {}, `${t.kind} ${t.number}`),
      el("td", {}, t.job_id ? jobLink(t.job_id) : "–"),
      el("td", {}, badge(t.status)),
      el("td", { class: "num" }, pct(t.value)),
      el("td", { class: "num" }, epochsText(t.epochs)),
      el("td", {}, t.error ?? el("code", {}, paramsText(t.params))),
    );
  const head = headRow(["run", "job", "status", "val_acc", "epochs", "params"]);
  return el("table", { id: "runs" }, head, el("tbody", {}, sweep.trials.map(row)));
}

// Each run's val_acc per epoch, from its job's metrics events (a confirm run that is its
// search trial once): read again while the job runs, kept once it has ended.
async function curves(sweep, cache) {
  const seen = new Set();
  const runs = sweep.trials.filter((t) => t.job_id && !seen.has(t.job_id) && seen.add(t.job_id));
  for (const t of runs) {
    if (cache.get(t.job_id)?.ended) continue;
    const ended = TERMINAL.has(t.status); // before the read: a last read after the end
    cache.set(t.job_id, { rows: metricsOf(await allEvents(t.job_id)), ended });
  }
  return runs.map((trial) => ({ ...cache.get(trial.job_id), trial }));
}

// One line per run; a pruned trial's grey and dashed.
function drawSweep(acc, found) {
  const last = Math.max(0, ...found.flatMap((c) => c.rows.map((r) => r.epoch)));
  const epochs = Array.from({ length: last }, (_, i) => i + 1);
  const series = found.map(({ rows, trial }, i) => {
    const pruned = trial.status === "pruned";
    return {
      label: `${trial.kind} ${trial.number}${pruned ? " (pruned)" : ""}`,
      data: epochs.map((e) => rows.find((r) => r.epoch === e)?.val_acc ?? null),
      color: pruned ? GREY : COLORS[i % COLORS.length],
      dashed: pruned,
    };
  });
  plot(acc, epochs, series);
}

function sweepView(id) {
  const parts = { title: el("h1"), summary: el("div"), board: el("div"), runs: el("div") };
  const acc = chart("sweep-chart", "validation accuracy, each run");
  view.replaceChildren(
    parts.title,
    parts.summary,
    el("h2", {}, "Leaderboard"),
    parts.board,
    el("div", { class: "charts" }, acc.box),
    el("h2", {}, "Runs"),
    parts.runs,
  );
  const cache = new Map();
  const stop = poll(async () => {
    const sweep = await getJson(sweepPath(id));
    parts.title.replaceChildren(sweep.name, " ", badge(sweep.status));
    parts.summary.replaceChildren(sweepSummary(sweep));
    parts.board.replaceChildren(leaderboardTable(sweep));
    parts.runs.replaceChildren(trialsTable(sweep));
    const found = await curves(sweep, cache);
    drawSweep(acc, found);
    return SWEEP_ENDED.has(sweep.status) && found.every((c) => c.ended);
  }, 2000);
  return () => {
    stop();
    acc.instance.destroy();
  };
}

// ---- routing: #/ (jobs), #/jobs/ID, #/compare?jobs=A,B, #/sweeps, #/sweeps/ID -------------

function route() {
  stopView();
  hideError();
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const job = path.match(/^\/jobs\/([^/]+)$/);
  const sweep = path.match(/^\/sweeps\/([^/]+)$/);
  if (job) stopView = jobView(decodeURIComponent(job[1]));
  else if (sweep) stopView = sweepView(decodeURIComponent(sweep[1]));
  else if (path === "/sweeps") stopView = sweepsView();
  else if (path === "/compare") {
    const ids = (new URLSearchParams(query).get("jobs") || "").split(",").filter(Boolean);
    stopView = compareView(ids);
  } else stopView = jobsView();
}

window.addEventListener("hashchange", route);
route();
