// The Models view: every servable model with its state; load, unload, delete and download.
import { call, json, say } from "./api.js";

const $ = (id) => document.getElementById(id);
let onChange = () => {};

function size(bytes) {
  if (!bytes) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  const power = Math.min(Math.floor(Math.log(bytes) / Math.log(1024)), units.length - 1);
  return `${(bytes / 1024 ** power).toFixed(power ? 1 : 0)} ${units[power]}`;
}

function button(label, name, handler) {
  const node = document.createElement("button");
  node.type = "button";
  node.textContent = label;
  node.setAttribute("aria-label", `${label} ${name}`);
  node.addEventListener("click", () => handler(node));
  return node;
}

function cell(text) {
  const node = document.createElement("td");
  node.textContent = text ?? "";
  return node;
}

// Runs one action with its button disabled and its outcome said in the status line.
async function act(node, doing, action) {
  node.disabled = true;
  say(doing);
  try {
    await action();
    say("");
  } catch (error) {
    say(`Error: ${error.message}`);
  } finally {
    node.disabled = false;
    await refreshModelTable();
    onChange();
  }
}

function loadBody(id) {
  const body = { model: id };
  if ($("load-context").value) body.context_length = Number($("load-context").value);
  if ($("load-ttl").value) body.ttl = Number($("load-ttl").value);
  return body;
}

function row(model, facts) {
  const tr = document.createElement("tr");
  tr.dataset.model = model.id;
  const name = document.createElement("th");
  name.scope = "row";
  name.textContent = model.id;
  const context = [model.max_context_length, model.loaded_context_length].filter(Boolean).join(" / ");
  const actions = document.createElement("td");
  const loaded = model.state === "loaded";
  actions.append(loaded
    ? button("Unload", model.id, (b) => act(b, `Unloading ${model.id}…`, () => call("/api/v0/models/unload", { method: "POST", body: { model: model.id } })))
    : button("Load", model.id, (b) => act(b, `Loading ${model.id}…`, () => call("/api/v0/models/load", { method: "POST", body: loadBody(model.id) }))));
  if (model.source === "store" || model.source === undefined) {
    actions.append(button("Delete", model.id, (b) => {
      if (confirm(`Delete ${model.id} from the store?`)) {
        act(b, `Deleting ${model.id}…`, () => call("/api/delete", { method: "DELETE", body: { model: model.id } }));
      }
    }));
  }
  const quant = facts?.quantization?.name || model.quantization;
  tr.append(name, cell(model.state), cell(model.arch), cell(model.compatibility_type), cell(quant),
    cell(size(facts?.size_bytes)), cell(context), actions);
  return tr;
}

export async function refreshModelTable() {
  const [v0, v1] = await Promise.all([json("/api/v0/models"), json("/api/v1/models")]);
  const facts = Object.fromEntries(v1.models.map((m) => [m.key, m]));
  $("model-rows").replaceChildren(...v0.data.map((m) => row(m, facts[m.id])));
}

async function follow(job) {
  const bar = $("download-progress");
  bar.hidden = false;
  for (;;) {
    const status = await json(`/api/v1/models/download/status/${encodeURIComponent(job)}`);
    if (status.total_size_bytes) bar.value = status.downloaded_bytes / status.total_size_bytes;
    $("download-state").textContent = `${status.status} ${size(status.downloaded_bytes)} of ${size(status.total_size_bytes)}`;
    if (status.status !== "downloading") {
      if (status.error) $("download-state").textContent = `failed: ${status.error}`;
      bar.hidden = status.status !== "completed";
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function download(event) {
  event.preventDefault();
  const name = $("download-name").value.trim();
  try {
    const started = await json("/api/v1/models/download", { method: "POST", body: { model: name } });
    if (started.status === "already_downloaded") {
      $("download-state").textContent = "already downloaded";
    } else {
      await follow(started.job_id);
    }
  } catch (error) {
    $("download-state").textContent = `failed: ${error.message}`;
  }
  await refreshModelTable();
  onChange();
}

export function setUpModels(changed) {
  onChange = changed;
  $("download").addEventListener("submit", download);
  $("load-options").addEventListener("submit", (event) => event.preventDefault());
}
