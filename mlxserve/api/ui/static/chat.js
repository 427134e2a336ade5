// The Chat view: a conversation streamed from /api/v0/chat/completions (OpenAI's chat plus the
// server's own stats), kept in localStorage, editable and re-runnable.
import { call, events, json, say } from "./api.js";
import * as store from "./conversations.js";
import { messageElement, updateMessage } from "./message.js";

const $ = (id) => document.getElementById(id);
const NUMBERS = ["temperature", "top_p", "top_k", "min_p", "max_tokens", "repeat_penalty",
  "presence_penalty", "frequency_penalty", "seed"];
const FIELDS = ["model", "system", "stop-strings", "extra", ...NUMBERS];

let conversations = store.loadConversations();
let current = conversations[0] || store.newConversation();
let attachments = []; // data: URLs of the images the next message carries
let models = [];
let running = null; // the AbortController of the reply in flight

export async function refreshModels() {
  const listed = (await json("/api/v0/models")).data.filter((m) => !["embeddings", "speech", "rerank"].includes(m.type));
  models = listed.sort((a, b) => (a.state === "loaded" ? 0 : 1) - (b.state === "loaded" ? 0 : 1));
  const select = $("model");
  const chosen = select.value || store.loadSettings().model;
  select.replaceChildren(...models.map((m) => new Option(`${m.id}${m.state === "loaded" ? " (loaded)" : ""}`, m.id)));
  if (models.some((m) => m.id === chosen)) select.value = chosen;
}

function requestBody() {
  const body = { model: $("model").value, stream: true, stream_options: { include_usage: true } };
  for (const name of NUMBERS) {
    if ($(name).value !== "") body[name] = Number($(name).value);
  }
  const stops = $("stop-strings").value.split("\n").filter(Boolean);
  if (stops.length) body.stop = stops;
  const extra = $("extra").value.trim();
  Object.assign(body, extra ? JSON.parse(extra) : {});
  const system = $("system").value.trim();
  body.messages = [...(system ? [{ role: "system", content: system }] : []), ...current.messages.map(wireMessage)];
  return body;
}

function wireMessage(message) {
  if (message.role === "assistant") {
    const calls = (message.toolCalls || []).map((c, i) => ({ id: c.id || `call_${i}`, type: "function", function: { name: c.name, arguments: c.arguments } }));
    return { role: "assistant", content: message.content || "", ...(calls.length ? { tool_calls: calls } : {}) };
  }
  if (!message.images?.length) return { role: message.role, content: message.content };
  const images = message.images.map((url) => ({ type: "image_url", image_url: { url } }));
  return { role: message.role, content: [{ type: "text", text: message.content }, ...images] };
}

function addDelta(reply, delta) {
  if (delta.content) reply.content += delta.content;
  if (delta.reasoning_content) reply.reasoning = (reply.reasoning || "") + delta.reasoning_content;
  for (const part of delta.tool_calls || []) {
    reply.toolCalls ||= [];
    const call = (reply.toolCalls[part.index ?? 0] ||= { id: part.id, name: "", arguments: "" });
    call.name += part.function?.name || "";
    call.arguments += part.function?.arguments || "";
  }
}

async function run() {
  let body;
  try {
    body = requestBody();
  } catch (error) {
    say(`Other request fields: ${error.message}`);
    return;
  }
  const reply = { role: "assistant", content: "" };
  current.messages.push(reply);
  const node = render().lastElementChild;
  const chosen = models.find((m) => m.id === body.model);
  say(chosen && chosen.state !== "loaded" ? `Loading ${body.model}…` : "Generating…");
  running = new AbortController();
  setRunning(true);
  const started = performance.now();
  let frame = 0;
  const draw = () => { frame = 0; updateMessage(node, reply); };
  try {
    const response = await call("/api/v0/chat/completions", { method: "POST", body, signal: running.signal });
    for await (const chunk of events(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = chunk.choices?.[0];
      if (choice?.delta) addDelta(reply, choice.delta);
      if (reply.stats === undefined && (reply.content || reply.reasoning || reply.toolCalls)) {
        reply.stats = { ttft: (performance.now() - started) / 1000 };
        say("Generating…");
      }
      if (choice?.finish_reason) reply.stats = { ...reply.stats, finish: choice.finish_reason };
      if (chunk.stats) reply.stats = { ...reply.stats, ttft: chunk.stats.time_to_first_token, tps: chunk.stats.tokens_per_second };
      if (chunk.usage) reply.stats = { ...reply.stats, tokens: chunk.usage.completion_tokens };
      frame ||= requestAnimationFrame(draw);
    }
    say("");
  } catch (error) {
    if (error.name === "AbortError") {
      reply.stats = { ...reply.stats, finish: "stopped" };
      say("Stopped");
    } else {
      reply.error = error.message;
      say(`Error: ${error.message}`);
    }
  } finally {
    cancelAnimationFrame(frame);
    running = null;
    setRunning(false);
    updateMessage(node, reply);
    persist();
    refreshModels().catch(() => {}); // a model loaded on demand is now loaded
  }
}

function setRunning(on) {
  $("send").disabled = on;
  $("stop").disabled = !on;
  if (!on) $("prompt").focus();
}

function persist() {
  current.title = store.titleOf(current);
  current.updated = Date.now();
  if (!conversations.includes(current)) conversations.unshift(current);
  store.saveConversations(conversations);
  renderList();
}

function rerunFrom(index) {
  if (running) return;
  current.messages.splice(index);
  run();
}

function edit(index, item) {
  const message = current.messages[index];
  const field = document.createElement("textarea");
  field.value = message.content;
  field.setAttribute("aria-label", "Edit message");
  const save = document.createElement("button");
  save.type = "button";
  save.textContent = "Save and re-run";
  save.addEventListener("click", () => {
    message.content = field.value;
    rerunFrom(index + 1);
  });
  item.querySelector(".body").replaceChildren(field, save);
  field.focus();
}

function render() {
  const list = $("messages");
  list.replaceChildren(...current.messages.map((message, i) => {
    const actions = message.role === "user"
      ? { Edit: (event) => edit(i, event.target.closest("article")) }
      : { "Re-run": () => rerunFrom(i) };
    return messageElement(message, actions);
  }));
  list.scrollTop = list.scrollHeight;
  return list;
}

function renderList() {
  $("conversations").replaceChildren(...conversations.map((conversation) => {
    const item = document.createElement("li");
    const open = document.createElement("button");
    open.type = "button";
    open.textContent = conversation.title;
    if (conversation === current) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => { if (!running) { current = conversation; render(); renderList(); } });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete ${conversation.title}`);
    remove.addEventListener("click", () => {
      conversations = conversations.filter((c) => c !== conversation);
      if (conversation === current) current = store.newConversation();
      store.saveConversations(conversations);
      render(); renderList();
    });
    item.append(open, remove);
    return item;
  }));
}

function send(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (running || (!text && !attachments.length)) return;
  current.messages.push({ role: "user", content: text, ...(attachments.length ? { images: attachments } : {}) });
  $("prompt").value = "";
  attachments = [];
  $("attachments").replaceChildren();
  run();
}

function attach(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/")) continue;
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      attachments.push(reader.result);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "thumbnail";
      remove.setAttribute("aria-label", `Remove ${file.name}`);
      const image = document.createElement("img");
      image.src = reader.result;
      image.alt = "";
      remove.append(image);
      remove.addEventListener("click", () => { attachments = attachments.filter((u) => u !== reader.result); remove.remove(); });
      $("attachments").append(remove);
    });
    reader.readAsDataURL(file);
  }
}

function keepSettings() {
  store.saveSettings(Object.fromEntries(FIELDS.map((id) => [id, $(id).value])));
}

export function setUpChat() {
  const saved = store.loadSettings();
  for (const id of FIELDS) if (saved[id] !== undefined && id !== "model") $(id).value = saved[id];
  $("settings").addEventListener("change", keepSettings);
  $("settings").addEventListener("submit", (event) => event.preventDefault());
  $("composer").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) send(event);
  });
  $("stop").addEventListener("click", () => running?.abort());
  $("new-chat").addEventListener("click", () => { if (!running) { current = store.newConversation(); render(); renderList(); $("prompt").focus(); } });
  $("images").addEventListener("change", (event) => { attach(event.target.files); event.target.value = ""; });
  const pane = document.querySelector(".conversation");
  pane.addEventListener("dragover", (event) => event.preventDefault());
  pane.addEventListener("drop", (event) => { event.preventDefault(); attach(event.dataTransfer.files); });
  render();
  renderList();
}
