// One chat message as DOM: its Markdown, reasoning folded apart, tool calls, images, stats line.
import { renderMarkdown } from "./markdown.js";

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function statsLine(stats) {
  if (!stats) return "";
  const parts = [];
  if (stats.ttft != null) parts.push(`first token ${stats.ttft.toFixed(2)} s`);
  if (stats.tps != null) parts.push(`${stats.tps.toFixed(1)} tokens/s`);
  if (stats.tokens != null) parts.push(`${stats.tokens} tokens`);
  if (stats.finish) parts.push(`finish: ${stats.finish}`);
  return parts.join(" · ");
}

// Builds the message's element; `actions` maps a button label to its handler.
export function messageElement(message, actions) {
  const item = element("article", `message ${message.role}`);
  item.setAttribute("aria-label", message.role === "user" ? "You" : "Model");
  item.append(element("h2", "role", message.role === "user" ? "You" : "Model"));
  item.append(element("div", "body"));
  const buttons = element("div", "actions");
  for (const [label, handler] of Object.entries(actions)) {
    const button = element("button", "", label);
    button.type = "button";
    button.addEventListener("click", handler);
    buttons.append(button);
  }
  item.append(buttons);
  updateMessage(item, message);
  return item;
}

// Re-renders the body in place; called once per animation frame while a reply streams.
export function updateMessage(item, message) {
  const body = item.querySelector(".body");
  body.replaceChildren();
  if (message.reasoning) {
    const details = element("details", "reasoning");
    details.append(element("summary", "", "Reasoning"), element("div", "reasoning-text", message.reasoning));
    body.append(details);
  }
  for (const url of message.images || []) {
    const image = element("img", "attached");
    image.src = url;
    image.alt = "attached image";
    body.append(image);
  }
  const content = element("div", "content");
  content.innerHTML = message.role === "user" ? "" : renderMarkdown(message.content || "");
  if (message.role === "user") content.textContent = message.content;
  body.append(content);
  for (const call of message.toolCalls || []) {
    const box = element("div", "tool-call");
    box.append(element("span", "tool-name", `call ${call.name}`), element("pre", "", call.arguments));
    body.append(box);
  }
  if (message.error) body.append(element("p", "error", message.error));
  const stats = statsLine(message.stats);
  if (stats) body.append(element("p", "stats", stats));
}
