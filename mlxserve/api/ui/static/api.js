// Calls to the server this page came from, with the API key when the server wants one.
const KEY = "mlxserve.apiKey";
let askingForKey = null; // one dialog, however many calls were refused at once

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra) {
  const key = sessionStorage.getItem(KEY);
  const all = { ...extra };
  if (key) all.Authorization = `Bearer ${key}`;
  return all;
}

function askForKey() {
  if (askingForKey) return askingForKey;
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  askingForKey = new Promise((resolve) => {
    document.getElementById("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY, input.value);
      dialog.close();
      askingForKey = null;
      resolve();
    }, { once: true });
  });
  input.value = "";
  dialog.showModal();
  input.focus();
  return askingForKey;
}

// fetch() that asks for the key on a 401 and tries again; other errors throw with the server's message.
export async function call(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let response = await fetch(path, init);
  while (response.status === 401) {
    await askForKey();
    init.headers = headers(body === undefined ? {} : { "Content-Type": "application/json" });
    response = await fetch(path, init);
  }
  if (!response.ok) throw new ApiError(response.status, await errorText(response));
  return response;
}

export async function json(path, options) {
  return (await call(path, options)).json();
}

async function errorText(response) {
  const text = await response.text();
  try {
    const parsed = JSON.parse(text);
    return parsed.error?.message || parsed.error || text;
  } catch {
    return text || response.statusText;
  }
}

// The `data:` payloads of a server-sent event stream, parsed as JSON, as they arrive.
export async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data && data !== "[DONE]") yield JSON.parse(data);
    }
  }
}

export function say(text) {
  document.getElementById("status").textContent = text;
}
