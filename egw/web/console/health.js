// The health strip: /readyz per provider, refreshed every few seconds: the GitHub rate-limit
// budget, Nomad's event stream, Cloud Logging reads left, the circuit breaker's state where a
// provider reports one, and the whole entry on hover. A field it does not know is ignored.

import { clear, el } from "./util.js";

const EVERY_MS = 5000;

export function facts(h) {
  const out = [];
  let level = "ok";
  if (h.error) {
    out.push(String(h.error));
    level = "bad";
  }
  if (h.circuit && h.circuit.state && h.circuit.state !== "closed") {
    out.push(`circuit ${h.circuit.state.replace(/_/g, " ")}`);
    if (h.circuit.state === "open") level = "bad";
    else if (h.circuit.state !== "closed" && level === "ok") level = "warn";
  }
  if (h.rate_limit && typeof h.rate_limit === "object") {
    out.push(`rate ${h.rate_limit.remaining}/${h.rate_limit.limit}`);
    if (h.rate_limit.limit && h.rate_limit.remaining < h.rate_limit.limit * 0.1 && level === "ok") level = "warn";
  }
  if (h.rate_limited_until) {
    out.push("rate limited");
    level = "bad";
  }
  if (h.namespaces && typeof h.namespaces === "object") {
    for (const [ns, s] of Object.entries(h.namespaces)) {
      out.push(`${ns}: ${s.connected ? "stream up" : s.mode || "stream down"}`);
      if (!s.connected && level === "ok") level = "warn";
    }
  }
  if (typeof h.logging_reads_per_minute === "number") {
    // reads spent in the last minute, by project: the busiest project's budget is what is left
    const spent = h.logging_reads_last_minute;
    const used = typeof spent === "number" ? spent : Math.max(0, ...Object.values(spent || {}));
    const left = Math.max(0, h.logging_reads_per_minute - used);
    out.push(`log reads left ${left}/${h.logging_reads_per_minute} a minute`);
    if (left === 0 && level === "ok") level = "warn";
  }
  if (h.last_error && level === "ok") level = "warn";
  if (typeof h.running === "number") out.push(`${h.running} running, ${h.queued || 0} queued`);
  return { text: out.join(" · "), level };
}

/** Starts the strip; resolves once the first answer is shown. */
export function healthStrip(root, onProviders) {
  let timer = null;
  let first;
  const ready = new Promise((r) => (first = r));
  async function refresh() {
    let body = null;
    try {
      const resp = await fetch("/readyz", { cache: "no-store" });
      body = await resp.json();
    } catch {
      body = null;
    }
    clear(root);
    if (!body || !body.providers) {
      root.append(el("span", { class: "chip bad", text: "gateway unreachable" }));
    } else {
      if (body.status !== "ready") root.append(el("span", { class: "chip bad", text: body.status.replace(/_/g, " ") }));
      if (body.storage && body.storage.full) root.append(el("span", { class: "chip bad", text: "storage full" }));
      for (const [name, h] of Object.entries(body.providers)) {
        const f = facts(h || {});
        root.append(el("span", { class: `chip ${f.level}`, "data-provider": name, title: JSON.stringify(h, null, 1) }, el("b", { text: name }), f.text ? ` ${f.text}` : ""));
      }
      onProviders(Object.keys(body.providers));
    }
    first();
    timer = setTimeout(refresh, EVERY_MS);
  }
  refresh();
  return ready;
}
