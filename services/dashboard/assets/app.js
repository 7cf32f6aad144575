// The Campfire dashboard: one page, two views (#/ and #/jobs/<id>), fed by
// the site's live NDJSON stream. No framework: the site serves these files itself.
"use strict";

const view = document.getElementById("view");
const loginForm = document.getElementById("login");
const TOKEN_KEY = "campfire-token";
let live; // the AbortController of the current stream
let plots = []; // uPlot instances of the job page, destroyed on every redraw of its layout
let jobLayout; // the job id whose page layout is drawn

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { authorization: `Bearer ${token}` } : {};
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  return node;
}

function ago(iso) {
  if (!iso) return "-";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  return seconds < 60 ? `${seconds.toFixed(0)} s ago` : `${(seconds / 60).toFixed(0)} min ago`;
}

function statusClass(status) {
  if (status === "FINISHED:COMPLETED") return "status done";
  if (status.startsWith("FINISHED") || status === "FAILED_TO_RUN") return "status failed";
  return status === "RUNNING" || status === "DISPATCHED" ? "status running" : "status";
}

function roundText(progress) {
  return progress && progress.totalRounds ? `${progress.currentRound + 1} / ${progress.totalRounds}` : "-";
}

function table(headings, rows, empty) {
  if (!rows.length) return el("p", { class: "empty" }, empty);
  return el("table", {}, el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))), el("tbody", {}, rows));
}

function renderOverview(data) {
  jobLayout = undefined;
  plots.forEach((plot) => plot.destroy());
  plots = [];
  const clients = data.clients.map((client) =>
    el("tr", { "data-client": client.name },
      el("td", {}, client.name), el("td", {}, client.org || "-"), el("td", {}, client.agents),
      el("td", {}, ago(client.lastHeartbeat)), el("td", {}, client.tasks.map((task) => `${task.taskName} (${task.jobId.slice(0, 8)})`).join(", ") || "idle")),
  );
  const jobs = data.jobs.map((job) =>
    el("tr", {},
      el("td", {}, el("a", { href: `#/jobs/${job.jobId}` }, job.name)), el("td", { class: statusClass(job.status) }, job.status),
      el("td", {}, roundText(job.progress)), el("td", {}, job.submitter), el("td", {}, job.submitTime.replace(/\.\d+Z$/, "Z"))),
  );
  view.replaceChildren(
    el("section", { id: "site" }, el("div", { class: "facts" },
      el("div", {}, "Site", el("b", {}, data.site.name)), el("div", {}, "Status", el("b", {}, data.site.status)),
      el("div", {}, "Clients", el("b", {}, data.clients.length)), el("div", {}, "Started", el("b", {}, ago(data.site.startTime))))),
    el("section", { id: "clients" }, el("h2", {}, "Connected clients"), table(["Client", "Organisation", "Agents", "Last heartbeat", "Task"], clients, "No client is connected.")),
    el("section", { id: "jobs" }, el("h2", {}, "Jobs"), table(["Job", "Status", "Round", "Submitter", "Submitted"], jobs, "No jobs yet.")),
  );
}

/** Series for uPlot: x = rounds, one y array per name. */
function seriesOf(rows, names, valueOf) {
  const xs = [...new Set(rows.map((row) => row.round))].filter((round) => round !== undefined && round !== null).sort((a, b) => a - b);
  return [xs, ...names.map((name) => xs.map((x) => valueOf(name, x)))];
}

const COLORS = ["#d9480f", "#1971c2", "#2b8a3e", "#7048e8", "#e67700", "#c2255c", "#0c8599", "#5c940d"];

function plot(target, title, names, data) {
  const width = Math.max(280, target.clientWidth - 8);
  const options = {
    title, width, height: 220,
    scales: { x: { time: false } },
    axes: [{ label: "round" }, {}],
    series: [{ label: "round" }, ...names.map((name, i) => ({ label: name, stroke: COLORS[i % COLORS.length], width: 2, points: { show: true } }))],
  };
  plots.push(new uPlot(options, data, target));
}

function heatMap(matrix) {
  if (!matrix || typeof matrix !== "object") return el("p", { class: "empty" }, "No cross-site evaluation.");
  const models = Object.keys(matrix);
  const sites = [...new Set(models.flatMap((model) => Object.keys(matrix[model] || {})))].sort();
  const valueOf = (model, site) => {
    const metrics = (matrix[model] || {})[site];
    if (!metrics || typeof metrics !== "object") return undefined;
    const first = Object.values(metrics).find((value) => typeof value === "number");
    return first;
  };
  const values = models.flatMap((model) => sites.map((site) => valueOf(model, site))).filter((value) => value !== undefined);
  const low = Math.min(...values), high = Math.max(...values);
  const color = (value) => {
    const t = high > low ? (value - low) / (high - low) : 1;
    return `hsl(${Math.round(10 + t * 110)}, 65%, ${Math.round(45 - t * 10)}%)`;
  };
  return el("table", { class: "heat" },
    el("thead", {}, el("tr", {}, el("th", {}, "model \\ site"), sites.map((site) => el("th", {}, site)))),
    el("tbody", {}, models.map((model) => el("tr", {}, el("th", {}, model), sites.map((site) => {
      const value = valueOf(model, site);
      return value === undefined ? el("td", {}, "-") : el("td", { class: "cell", style: `background:${color(value)}` }, value.toFixed(3));
    })))));
}

function renderJob(data) {
  const { job, history } = data;
  if (jobLayout !== job.jobId) {
    jobLayout = job.jobId;
    view.replaceChildren(
      el("p", {}, el("a", { href: "#/" }, "← all jobs")),
      el("h1", { id: "job-name" }, ""),
      el("section", { id: "job-facts" }),
      el("section", {}, el("h2", {}, "Per round"), el("div", { class: "plots" },
        el("div", { id: "global-plot", class: "plot" }), el("div", { id: "client-plot", class: "plot" }), el("div", { id: "duration-plot", class: "plot" }))),
      el("section", { id: "cross-site" }, el("h2", {}, "Cross-site evaluation")),
      el("section", { id: "client-records" }, el("h2", {}, "Client metrics")),
      el("section", { id: "trainer-logs" }, el("h2", {}, "Trainer logs")),
    );
  }
  document.getElementById("job-name").textContent = `${job.name} (${job.jobId})`;
  const finished = job.status.startsWith("FINISHED") || job.status === "FAILED_TO_RUN";
  const metrics = Object.entries((job.progress && job.progress.latestMetrics) || {}).map(([name, value]) => `${name} ${Number(value).toPrecision(4)}`).join(", ");
  const abort = data.mayAbort && !finished
    ? el("button", { id: "abort", class: "danger", onclick: () => abortJob(job.jobId) }, "Abort job")
    : "";
  document.getElementById("job-facts").replaceChildren(el("div", { class: "facts" },
    el("div", {}, "Status", el("b", { id: "job-status", class: statusClass(job.status) }, job.status)),
    el("div", {}, "Round", el("b", { id: "round" }, roundText(job.progress))),
    el("div", {}, "Rounds recorded", el("b", { id: "rounds-recorded" }, history.rounds.length)),
    el("div", {}, "Latest", el("b", {}, metrics || "-")),
    el("div", {}, "Best round", el("b", {}, history.best_round ?? "-")),
    el("div", {}, abort)),
    el("p", { class: "muted" }, (job.progress && job.progress.phase) || job.endReason || ""));
  drawPlots(history);
  document.getElementById("cross-site").replaceChildren(el("h2", {}, "Cross-site evaluation"), heatMap(data.crossSite));
  const recent = history.client_records.slice(-50).reverse();
  const names = [...new Set(recent.flatMap((record) => Object.keys(record.values)))].sort();
  document.getElementById("client-records").replaceChildren(el("h2", {}, "Client metrics (latest 50)"),
    table(["Client", "Round", "Time", ...names], recent.map((record) =>
      el("tr", {}, el("td", {}, record.client), el("td", {}, record.round ?? "-"), el("td", {}, ago(record.time)),
        names.map((name) => el("td", {}, record.values[name] === undefined ? "-" : Number(record.values[name]).toPrecision(4))))), "No client has logged metrics yet."));
  document.getElementById("trainer-logs").replaceChildren(el("h2", {}, `Trainer logs (latest ${data.logs.length})`),
    table(["Time", "Client", "Level", "Message"], [...data.logs].reverse().map((line) =>
      el("tr", { class: `log-${line.level}` }, el("td", {}, line.time.replace(/\.\d+Z$/, "Z")), el("td", {}, line.client), el("td", {}, line.level), el("td", { class: "message" }, line.message))),
    "No trainer has logged a line yet."));
}

let plotted = ""; // what the plots show, to redraw them only when it changed
function drawPlots(history) {
  const key = JSON.stringify([history.rounds.length, history.client_records.length, document.body.clientWidth]);
  if (key === plotted) return;
  plotted = key;
  plots.forEach((plot) => plot.destroy());
  plots = [];
  const targets = ["global-plot", "client-plot", "duration-plot"].map((id) => document.getElementById(id));
  targets.forEach((target) => target.replaceChildren());
  const globalNames = [...new Set(history.rounds.flatMap((round) => Object.keys(round.metrics)))].sort();
  if (globalNames.length) {
    plot(targets[0], "Global model", globalNames, seriesOf(history.rounds, globalNames, (name, x) => history.rounds.find((round) => round.round === x)?.metrics[name] ?? null));
    targets[0].setAttribute("data-points", String(history.rounds.length));
  } else targets[0].append(el("p", { class: "empty" }, "No global metrics yet (the job validates no model, or no round finished)."));
  const records = history.client_records.filter((record) => record.round !== undefined && record.round !== null);
  const metricNames = [...new Set(records.flatMap((record) => Object.keys(record.values)))].sort();
  const metric = metricNames.includes("loss") ? "loss" : metricNames.includes("accuracy") ? "accuracy" : metricNames[0];
  if (metric) {
    const clients = [...new Set(records.map((record) => record.client))].sort();
    const valueOf = (client, x) => {
      const hits = records.filter((record) => record.client === client && record.round === x && record.values[metric] !== undefined);
      return hits.length ? hits[hits.length - 1].values[metric] : null;
    };
    plot(targets[1], `Clients: ${metric}`, clients, seriesOf(records, clients, valueOf));
  } else targets[1].append(el("p", { class: "empty" }, "No client metrics yet."));
  const timed = history.rounds.filter((round) => round.duration_seconds !== undefined);
  if (timed.length) plot(targets[2], "Round duration (s)", ["seconds"], seriesOf(timed, ["seconds"], (_, x) => timed.find((round) => round.round === x)?.duration_seconds ?? null));
  else targets[2].append(el("p", { class: "empty" }, "No round finished yet."));
}

async function abortJob(jobId) {
  if (!confirm("Abort this job? Its agents stop their tasks; the job ends FINISHED:ABORTED.")) return;
  const response = await fetch(`/api/jobs/${encodeURIComponent(jobId)}/abort`, {
    method: "POST", headers: { ...headers(), "content-type": "application/json" }, body: JSON.stringify({ reason: "from the dashboard" }),
  });
  if (!response.ok) alert(`The site refused: ${(await response.json()).error}`);
}

function showLogin(reason) {
  live?.abort();
  loginForm.hidden = false;
  document.getElementById("login-reason").textContent = reason;
  view.replaceChildren();
}

loginForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  loginForm.hidden = true;
  route();
});

/** Follows the live stream of the current view, reconnecting after a pause when it breaks. */
async function follow(jobId) {
  live?.abort();
  const controller = new AbortController();
  live = controller;
  const status = document.getElementById("connection");
  while (!controller.signal.aborted) {
    try {
      const response = await fetch(`/api/live${jobId ? `?job=${encodeURIComponent(jobId)}` : ""}`, { headers: headers(), signal: controller.signal });
      if (response.status === 401 || response.status === 403) return showLogin((await response.json()).error);
      if (!response.ok) throw new Error((await response.json()).error);
      status.textContent = "live";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const message = JSON.parse(buffer.slice(0, newline));
          buffer = buffer.slice(newline + 1);
          if (message.error) throw new Error(message.error);
          document.getElementById("site-name").textContent = message.overview.site.name;
          document.getElementById("caller").textContent = `${message.overview.caller.name} (${message.overview.caller.role})`;
          if (message.job) renderJob(message.job);
          else renderOverview(message.overview);
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      status.textContent = `reconnecting (${error.message})`;
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function route() {
  const match = /^#\/jobs\/(.+)$/.exec(location.hash);
  jobLayout = undefined;
  plotted = "";
  void follow(match ? decodeURIComponent(match[1]) : undefined);
}

window.addEventListener("hashchange", route);
window.addEventListener("resize", () => { plotted = ""; });
route();
