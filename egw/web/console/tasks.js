// The tasks page: newest first, filtered by provider, status, label and name, paged with the
// API's cursor, and live: every event of the gateway's /v1/events stream refreshes the page.

import { api, follow } from "./api.js";
import { badge, clear, duration, el, flags, labelsText, upstreamLink, when } from "./util.js";

const PAGE = 25;

export function tasksPage(main, ctx, params) {
  const filters = {
    provider: params.get("provider") || "",
    status: params.get("status") || "",
    label: params.get("label") || "",
    name: params.get("name") || "",
  };
  const cursors = [null]; // the cursor of each page seen, to go back
  let page = 0;
  const body = el("tbody");
  const info = el("span", { class: "muted", "data-testid": "list-info" });
  const error = el("p", { class: "error", role: "alert" });
  const prev = el("button", { type: "button", text: "← Newer", disabled: true, onclick: () => go(page - 1) });
  const next = el("button", { type: "button", text: "Older →", disabled: true, onclick: () => go(page + 1) });
  const live = el("span", { class: "live muted", "data-testid": "live", text: "connecting" });

  const providerSel = el("select", { name: "provider", "aria-label": "provider" }, el("option", { value: "", text: "any provider" }));
  for (const p of ctx.providers) providerSel.appendChild(el("option", { value: p, text: p }));
  const statusSel = el("select", { name: "status", "aria-label": "status" }, el("option", { value: "", text: "any status" }));
  for (const s of ctx.statuses) statusSel.appendChild(el("option", { value: s, text: s.replace(/_/g, " ") }));
  const labelIn = el("input", { name: "label", placeholder: "labels: name=value, ...", "aria-label": "label" });
  const nameIn = el("input", { name: "name", placeholder: "name contains", "aria-label": "name" });
  providerSel.value = filters.provider;
  statusSel.value = filters.status;
  labelIn.value = filters.label;
  nameIn.value = filters.name;

  const form = el(
    "form",
    {
      class: "filters",
      onsubmit: (e) => {
        e.preventDefault();
        const q = new URLSearchParams();
        for (const [k, input] of Object.entries({ provider: providerSel, status: statusSel, label: labelIn, name: nameIn })) {
          if (input.value) q.set(k, input.value);
        }
        location.hash = `#/tasks${q.toString() ? `?${q}` : ""}`;
      },
    },
    providerSel,
    statusSel,
    labelIn,
    nameIn,
    el("button", { type: "submit", text: "Filter" }),
  );
  for (const s of [providerSel, statusSel]) s.addEventListener("change", () => form.requestSubmit());

  const table = el(
    "table",
    { class: "tasks" },
    el("thead", {}, el("tr", {}, ["Status", "Name", "Provider", "Labels", "Created", "Duration", "Exit", "Upstream"].map((h) => el("th", { text: h })))),
    body,
  );
  main.append(el("div", { class: "bar" }, form, live), error, table, el("div", { class: "pager" }, prev, info, next));

  function row(t) {
    return el(
      "tr",
      { "data-task": t.id, "data-status": t.status },
      el("td", {}, badge(t.status), flags(t)),
      el("td", {}, el("a", { href: `#/task/${t.id}`, text: t.name || t.id }), t.namespace ? el("span", { class: "tag", text: t.namespace }) : null),
      el("td", { text: t.provider }),
      el("td", {}, labelsText(t.labels).map((l) => el("span", { class: "tag", text: l }))),
      el("td", { text: when(t.created_at), title: t.created_at }),
      el("td", { text: duration(t) }),
      el("td", { text: t.exit_code === null || t.exit_code === undefined ? "" : String(t.exit_code) }),
      el("td", {}, upstreamLink(t, "open")),
    );
  }

  async function load() {
    const q = { limit: PAGE, cursor: cursors[page], provider: filters.provider, status: filters.status, name: filters.name, label: filters.label.split(",").map((l) => l.trim()).filter(Boolean) };
    try {
      const data = await api.get("/v1/tasks", q);
      error.textContent = "";
      clear(body).append(...data.tasks.map(row));
      if (!data.tasks.length) body.append(el("tr", {}, el("td", { colspan: "8", class: "muted", text: "No tasks." })));
      cursors[page + 1] = data.next_cursor;
      prev.disabled = page === 0;
      next.disabled = !data.next_cursor;
      info.textContent = `page ${page + 1}`;
    } catch (err) {
      error.textContent = `${err.message}${err.details && err.details.field ? ` (${err.details.field})` : ""}`;
    }
  }
  function go(n) {
    page = n;
    load();
  }
  // every event refreshes the page, at most every 250 ms
  let timer = null;
  function soon() {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      load();
    }, 250);
  }
  load();
  const sse = follow("/v1/events", {
    onEvent: () => soon(),
    onState: (s) => {
      live.textContent = s === "live" ? "● live" : s;
      live.dataset.state = s;
      if (s === "live") soon(); // what happened while disconnected
    },
  });
  return () => {
    sse.stop();
    clearTimeout(timer);
  };
}
