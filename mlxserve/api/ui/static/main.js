// Tabs between the three views (arrow keys move between them, as the ARIA tabs pattern says).
import { say } from "./api.js";
import { refreshModels, setUpChat } from "./chat.js";
import { refreshModelTable, setUpModels } from "./models.js";
import { setUpServer, showMetrics, showServerOptions } from "./server.js";

const tabs = [...document.querySelectorAll("[role=tab]")];

function report(promise) {
  promise.catch((error) => say(`Error: ${error.message}`));
}

function select(tab) {
  for (const other of tabs) {
    const chosen = other === tab;
    other.setAttribute("aria-selected", String(chosen));
    other.tabIndex = chosen ? 0 : -1;
    document.getElementById(other.getAttribute("aria-controls")).hidden = !chosen;
  }
  const view = tab.id.replace("tab-", "");
  if (view === "chat") report(refreshModels());
  if (view === "models") report(refreshModelTable());
  if (view === "server") report(showServerOptions());
  showMetrics(view === "server");
  location.hash = view;
}

for (const tab of tabs) {
  tab.addEventListener("click", () => select(tab));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    const next = tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length];
    next.focus();
    select(next);
  });
}

setUpChat();
setUpModels(() => report(refreshModels()));
setUpServer();
select(tabs.find((tab) => `#${tab.id.replace("tab-", "")}` === location.hash) || tabs[0]);
