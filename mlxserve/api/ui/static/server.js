// The Server view: the options it runs with (/api/v0/server), /metrics while the view is open,
// and the live request log (/api/v0/log/stream) from the moment the page opened, filterable.
import { call, events, json } from "./api.js";

const $ = (id) => document.getElementById(id);
const entries = new Map(); // a generation's id -> its list item
let metricsTimer = 0;

export async function refreshMetrics() {
  const text = await (await call("/metrics")).text();
  // Histogram buckets are left out: their sum, count and maximum say enough at a glance.
  const shown = (line) => line && !line.startsWith("#") && !line.includes("_bucket{");
  const rows = text.split("\n").filter(shown).map((line) => {
    const at = line.lastIndexOf(" ");
    const tr = document.createElement("tr");
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = line.slice(0, at);
    const value = document.createElement("td");
    value.textContent = line.slice(at + 1);
    tr.append(name, value);
    return tr;
  });
  $("metric-rows").replaceChildren(...rows);
}

export function showMetrics(visible) {
  clearInterval(metricsTimer);
  if (!visible) return;
  refreshMetrics().catch(() => {});
  metricsTimer = setInterval(() => refreshMetrics().catch(() => {}), 2000);
}

function optionText(value) {
  if (value === null || value === "") return "none";
  if (typeof value === "boolean") return value ? "on" : "off";
  return Array.isArray(value) ? value.join(", ") || "none" : String(value);
}

export async function showServerOptions() {
  const { options } = await json("/api/v0/server");
  const pairs = Object.entries(options).flatMap(([name, value]) => {
    const term = document.createElement("dt");
    term.textContent = `--${name.replaceAll("_", "-")}`;
    const detail = document.createElement("dd");
    detail.textContent = optionText(value);
    return [term, detail];
  });
  $("server-options").replaceChildren(...pairs);
}

function block(title, text) {
  const details = document.createElement("details");
  details.open = true;
  const summary = document.createElement("summary");
  summary.textContent = title;
  const pre = document.createElement("pre");
  pre.textContent = text;
  details.append(summary, pre);
  return details;
}

function statsText(stats) {
  if (!stats) return "";
  return `${stats.prompt_tokens} prompt tokens (${stats.cached_prompt_tokens} cached), ` +
    `${stats.completion_tokens} generated, first token ${stats.time_to_first_token?.toFixed(3)} s, ` +
    `${stats.tokens_per_second?.toFixed(1)} tokens/s, ${stats.stop_reason}`;
}

function show(record) {
  let item = entries.get(record.id);
  if (!item) {
    item = document.createElement("li");
    const heading = document.createElement("h3");
    heading.textContent = `${new Date(record.time * 1000).toLocaleTimeString()} ${record.model} ${record.endpoint}`;
    item.append(heading);
    entries.set(record.id, item);
    $("log").prepend(item);
  }
  if (record.type === "request") {
    const prompt = Array.isArray(record.prompt) ? JSON.stringify(record.prompt) : record.prompt;
    item.append(block("Prompt", prompt), block("Sampling", JSON.stringify({ ...record.sampling, max_tokens: record.max_tokens, stop: record.stop })));
  } else {
    item.append(block("Output", record.output));
    const line = document.createElement("p");
    line.className = record.error ? "error" : "stats";
    line.textContent = record.error || statsText(record.stats);
    item.append(line);
  }
  filter();
}

function filter() {
  const wanted = $("log-filter").value.toLowerCase();
  for (const item of entries.values()) item.hidden = !!wanted && !item.textContent.toLowerCase().includes(wanted);
}

// The feed reconnects after the server restarts or the connection drops.
async function follow() {
  for (;;) {
    try {
      for await (const record of events(await call("/api/v0/log/stream"))) show(record);
    } catch {
      // the server went away: try again shortly
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

export function setUpServer() {
  $("log-filter").addEventListener("input", filter);
  $("log-clear").addEventListener("click", () => { entries.clear(); $("log").replaceChildren(); });
  follow();
}
