// A small Markdown subset as HTML: every character of the model's text is escaped first, so the
// only markup in the result is what this module writes (code blocks, emphasis, lists, links).
const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function inline(text) {
  const codes = [];
  let html = escapeHtml(text).replace(/`([^`]+)`/g, (_, code) => {
    codes.push(code);
    return `\u0000${codes.length - 1}\u0000`;
  });
  html = html
    .replace(/\*\*(.+?)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^*])\*([^*\s][^*]*?)\*/g, "$1<em>$2</em>")
    .replace(/\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g, '<a href="$2" rel="noopener noreferrer" target="_blank">$1</a>');
  return html.replace(/\u0000(\d+)\u0000/g, (_, i) => `<code>${codes[Number(i)]}</code>`);
}

function blocks(text) {
  const out = [];
  let list = null; // "ul" or "ol" while inside one
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) out.push(`<p>${paragraph.map(inline).join("<br>")}</p>`);
    paragraph = [];
  };
  const closeList = () => {
    if (list) out.push(`</${list}>`);
    list = null;
  };
  for (const line of text.split("\n")) {
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    const item = /^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/.exec(line);
    if (heading) {
      flush(); closeList();
      const level = Math.min(heading[1].length + 2, 6); // below the page's own headings
      out.push(`<h${level}>${inline(heading[2])}</h${level}>`);
    } else if (item) {
      flush();
      const kind = item[1] ? "ul" : "ol";
      if (list !== kind) { closeList(); out.push(`<${kind}>`); list = kind; }
      out.push(`<li>${inline(item[3])}</li>`);
    } else if (/^>\s?/.test(line)) {
      flush(); closeList();
      out.push(`<blockquote>${inline(line.replace(/^>\s?/, ""))}</blockquote>`);
    } else if (!line.trim()) {
      flush(); closeList();
    } else {
      closeList();
      paragraph.push(line);
    }
  }
  flush(); closeList();
  return out.join("");
}

// Fenced code blocks alternate with prose; an unclosed fence (a reply still streaming) is code.
export function renderMarkdown(text) {
  const parts = text.split(/^```/m);
  return parts.map((part, i) => {
    if (i % 2 === 0) return blocks(part);
    const newline = part.indexOf("\n");
    const language = newline < 0 ? "" : part.slice(0, newline).trim();
    const code = newline < 0 ? "" : part.slice(newline + 1).replace(/\n$/, "");
    const label = language ? ` data-language="${escapeHtml(language)}"` : "";
    return `<pre${label}><code>${escapeHtml(code)}</code></pre>`;
  }).join("");
}
