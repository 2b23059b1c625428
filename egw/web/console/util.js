// Small DOM and formatting helpers shared by the pages.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return node;
}

const KNOWN = ["pending", "queued", "running", "cancelling", "cancel_failed", "succeeded", "failed", "cancelled", "timed_out"];

/** A status badge; a status this console does not know gets the neutral one. */
export function badge(status) {
  const known = KNOWN.includes(status) ? `s-${status}` : "s-other";
  return el("span", { class: `badge ${known}`, text: String(status).replace(/_/g, " "), "data-status": status });
}

export function duration(task) {
  const from = Date.parse(task.started_at || task.created_at);
  const to = task.finished_at ? Date.parse(task.finished_at) : Date.now();
  if (!from) return "";
  let s = Math.max(0, (to - from) / 1000);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  s = Math.round(s % 60);
  if (m < 60) return `${m}m ${s}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

export function when(text) {
  if (!text) return "";
  const d = new Date(text);
  return d.toLocaleString(undefined, { hour12: false });
}

/** The flags a task carries besides its status: stuck (with why), cancel_failed. */
export function flags(task) {
  const out = [];
  if (task.stuck) {
    const why = typeof task.stuck === "object" ? `${task.stuck.reason || "stuck"}${task.stuck.since ? ` since ${when(task.stuck.since)}` : ""}` : "stuck";
    out.push(el("span", { class: "flag flag-stuck", title: why, text: "stuck" }));
  }
  if (task.status === "cancel_failed") out.push(el("span", { class: "flag flag-cancel-failed", title: task.reason || "", text: "cancel failed" }));
  return out;
}

/** The upstream link (GitHub run, Cloud Run execution's logs, Nomad job), opened without a referrer. */
export function upstreamLink(task, label) {
  const up = task.upstream || {};
  if (!up.url) return up.id ? el("span", { class: "mono", text: up.id }) : null;
  return el("a", { href: up.url, target: "_blank", rel: "noopener noreferrer", class: "upstream", text: label || up.id || "upstream" });
}

export function labelsText(labels) {
  return Object.entries(labels || {}).map(([k, v]) => `${k}=${v}`);
}

export function hasScope(scopes, scope) {
  return scopes.includes(scope) || scopes.includes("admin");
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}
