// Conversations and chat settings, kept in this browser's localStorage.
const CONVERSATIONS = "mlxserve.conversations";
const SETTINGS = "mlxserve.settings";

function read(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

export function loadConversations() {
  return read(CONVERSATIONS, []);
}

export function saveConversations(conversations) {
  try {
    localStorage.setItem(CONVERSATIONS, JSON.stringify(conversations));
  } catch {
    // Images can outgrow the quota: keep the text of every conversation rather than nothing.
    const light = conversations.map((c) => ({ ...c, messages: c.messages.map(({ images, ...m }) => m) }));
    localStorage.setItem(CONVERSATIONS, JSON.stringify(light));
  }
}

export function newConversation() {
  return { id: crypto.randomUUID(), title: "New conversation", messages: [], updated: Date.now() };
}

export function titleOf(conversation) {
  const first = conversation.messages.find((m) => m.role === "user");
  return first ? first.content.slice(0, 60) || "Images" : "New conversation";
}

export function loadSettings() {
  return read(SETTINGS, {});
}

export function saveSettings(settings) {
  localStorage.setItem(SETTINGS, JSON.stringify(settings));
}
