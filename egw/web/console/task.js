// A task's page: its header (status, times, upstream link, flags), the buttons its token's
// scopes allow (cancel, force cancel, re-run, each confirmed first), the event timeline (live;
// stale upstream reports greyed) and the log.

import { api, follow } from "./api.js";
import { LogView } from "./logview.js";
import { badge, clear, duration, el, flags, hasScope, labelsText, upstreamLink, when } from "./util.js";

const TERMINAL = ["succeeded", "failed", "cancelled", "timed_out"];

/** Asks in a modal dialog; resolves to true when confirmed. */
export function confirmDialog(message, action) {
  return new Promise((resolve) => {
    const dialog = el(
      "dialog",
      { class: "confirm", "data-testid": "confirm" },
      el("p", { text: message }),
      el(
        "form",
        { method: "dialog" },
        el("button", { value: "cancel", type: "submit", text: "Back" }),
        el("button", { value: "ok", type: "submit", class: "danger", text: action }),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    document.body.appendChild(dialog);
    dialog.showModal();
  });
}

/** A report from upstream that was recorded but not applied (older than what egw knows). */
function stale(ev) {
  return ev.applied === false && ev.kind === "observed";
}

export function eventRow(ev) {
  const data = Object.entries(ev.data || {}).map(([k, v]) => el("span", { class: "tag", text: `${k}=${typeof v === "object" ? JSON.stringify(v) : v}` }));
  const change = ev.prev_status && ev.prev_status !== ev.status ? [badge(ev.prev_status), " → ", badge(ev.status)] : [badge(ev.status)];
  return el(
    "li",
    { class: stale(ev) ? "ev stale" : "ev", "data-seq": ev.seq, "data-kind": ev.kind, title: stale(ev) ? "a stale report: recorded, not applied" : "" },
    el("span", { class: "ev-at mono", text: when(ev.at) }),
    el("span", { class: "ev-kind", text: ev.kind }),
    el("span", { class: "ev-change" }, change),
    stale(ev) ? el("span", { class: "flag", text: "stale" }) : null,
    ev.reason ? el("span", { class: "ev-reason", text: ev.reason }) : null,
    ev.exit_code !== null && ev.exit_code !== undefined ? el("span", { class: "tag", text: `exit ${ev.exit_code}` }) : null,
    el("span", { class: "muted", text: [ev.source, ev.actor].filter(Boolean).join(" · ") }),
    data,
  );
}

export function taskPage(main, ctx, id) {
  const header = el("section", { class: "task-head" });
  const actions = el("div", { class: "actions" });
  const error = el("p", { class: "error", role: "alert" });
  const timeline = el("ol", { class: "timeline", "data-testid": "timeline" });
  const log = new LogView(id, { onStatus: (t) => show(t), onEnd: (e) => e.task && show(e.task) });
  main.append(
    header,
    actions,
    error,
    el("div", { class: "task-body" }, el("section", { class: "events" }, el("h2", { text: "Events" }), timeline), el("section", { class: "output" }, el("h2", { text: "Output" }), log.root)),
  );
  let task = null;

  async function act(what, run) {
    error.textContent = "";
    try {
      const result = await run();
      if (result && result.id && result.id !== id) location.hash = `#/task/${result.id}`;
      else if (result) show(result);
    } catch (err) {
      error.textContent = `${what}: ${err.message}`;
    }
  }

  function buttons(t) {
    clear(actions);
    if (!hasScope(ctx.scopes, "tasks:write")) return;
    const done = TERMINAL.includes(t.status);
    if (!done) {
      actions.append(
        el("button", {
          type: "button",
          class: "danger",
          text: "Cancel",
          onclick: async () => (await confirmDialog(`Cancel task ${t.name || t.id}?`, "Cancel task")) && act("cancel", () => api.post(`/v1/tasks/${id}/cancel`)),
        }),
        el("button", {
          type: "button",
          class: "danger",
          text: "Force cancel",
          onclick: async () => (await confirmDialog(`Force cancel ${t.name || t.id}? It is marked cancelled now, even if the upstream does not confirm.`, "Force cancel")) && act("force cancel", () => api.post(`/v1/tasks/${id}/cancel?force=true`)),
        }),
      );
    }
    actions.append(
      el("button", {
        type: "button",
        text: "Re-run",
        onclick: async () => (await confirmDialog(`Run ${t.name || t.id} again, as a new task?`, "Re-run")) && act("re-run", () => api.post(`/v1/tasks/${id}/rerun`)),
      }),
    );
  }

  function show(t) {
    if (task && t.index !== undefined && task.index > t.index) return;
    const changed = !task || task.status !== t.status;
    task = t;
    clear(header).append(
      el("h1", {}, badge(t.status), " ", t.name || t.id, flags(t)),
      el(
        "dl",
        { class: "facts" },
        ...[
          ["id", el("span", { class: "mono", text: t.id })],
          ["provider", t.provider],
          t.namespace ? ["namespace", t.namespace] : null,
          ["created", when(t.created_at)],
          ["started", when(t.started_at)],
          ["finished", when(t.finished_at)],
          ["duration", duration(t)],
          ["exit code", t.exit_code === null || t.exit_code === undefined ? "" : String(t.exit_code)],
          ["reason", t.reason || ""],
          ["upstream", upstreamLink(t) || ""],
          ["labels", labelsText(t.labels).join(", ")],
          ["actor", t.actor || ""],
          ["timeout", t.timeout_s ? `${t.timeout_s}s` : ""],
          t.stuck ? ["stuck", `${t.stuck.reason || ""} (since ${when(t.stuck.since)})`] : null,
        ]
          .filter((fact) => fact && fact[1] !== "")
          .map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", {}, v))),
      ),
    );
    if (changed) buttons(t);
  }

  let sse = null;
  let closed = false;
  (async () => {
    try {
      show(await api.get(`/v1/tasks/${id}`));
    } catch (err) {
      error.textContent = err.message;
      return;
    }
    let after = 0;
    for (;;) {
      const page = await api.get(`/v1/tasks/${id}/events`, { after, limit: 500 });
      timeline.append(...page.events.map(eventRow));
      if (!page.events.length || page.events.length < 500) {
        after = page.last_seq;
        break;
      }
      after = page.last_seq;
    }
    if (closed) return;
    sse = follow(`/v1/tasks/${id}/events`, {
      lastId: after,
      onEvent: (f) => {
        if (f.event !== "status" && f.event !== "event") return;
        timeline.append(eventRow(JSON.parse(f.data)));
        api.get(`/v1/tasks/${id}`).then(show, () => {});
      },
    });
    if (!closed) await log.start().catch((err) => (error.textContent = `output: ${err.message}`));
  })();
  return () => {
    closed = true;
    if (sse) sse.stop();
    log.stop();
  };
}
