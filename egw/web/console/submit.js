// The submit page: a provider, its task as JSON (a template per provider to start from),
// name, labels, timeout_s and an optional Idempotency-Key. The API validates; each error it
// names a field of (`details.field`) is shown next to that field.

import { ApiError, call } from "./api.js";
import { el } from "./util.js";

const TEMPLATES = {
  local: { command: "sh", args: ["-c", "for i in 1 2 3; do echo step $i; sleep 1; done"] },
  nomad: { job_id: "console-job", image: "busybox:latest", command: "echo", args: ["hello from nomad"] },
  github_actions: { workflow_id: "deploy.yml", ref: "main", inputs: { env: "staging" } },
  cloud_run: { project: "egw-dev", region: "us-central1", job: "hello", args: ["hello from cloud run"] },
};

function template(provider) {
  return JSON.stringify(TEMPLATES[provider] || {}, null, 2);
}

export function submitPage(main, ctx) {
  const provider = el("select", { name: "provider", id: "f-provider" });
  for (const p of ctx.providers) provider.appendChild(el("option", { value: p, text: p }));
  const task = el("textarea", { name: "task", id: "f-task", rows: "10", spellcheck: "false", class: "mono" });
  const name = el("input", { name: "name", id: "f-name", placeholder: "optional" });
  const labels = el("input", { name: "labels", id: "f-labels", placeholder: "team=infra, env=dev" });
  const timeout = el("input", { name: "timeout_s", id: "f-timeout_s", inputmode: "decimal", placeholder: "seconds, optional" });
  const key = el("input", { name: "idempotency_key", id: "f-idempotency_key", placeholder: "optional: a retry with the same key and body is the same task" });
  const errors = {};
  const general = el("p", { class: "error", role: "alert", "data-field": "body" });
  task.value = template(provider.value);
  provider.addEventListener("change", () => (task.value = template(provider.value)));

  function field(label, input, id) {
    errors[id] = el("span", { class: "field-error", "data-field": id, role: "alert" });
    return el("div", { class: "field" }, el("label", { for: input.id, text: label }), input, errors[id]);
  }
  function clearErrors() {
    for (const e of Object.values(errors)) e.textContent = "";
    general.textContent = "";
    for (const i of main.querySelectorAll(".invalid")) i.classList.remove("invalid");
  }
  function showError(fieldName, message) {
    const top = (fieldName || "").split(".")[0];
    const target = { Idempotency_Key: "idempotency_key", "Idempotency-Key": "idempotency_key" }[top] || top;
    if (errors[target]) {
      errors[target].textContent = message + (fieldName && fieldName !== target ? ` (${fieldName})` : "");
      const input = main.querySelector(`#f-${target}`);
      if (input) input.classList.add("invalid");
    } else {
      general.textContent = message;
    }
  }

  const form = el(
    "form",
    {
      class: "submit",
      novalidate: true,
      onsubmit: async (e) => {
        e.preventDefault();
        clearErrors();
        const body = { provider: provider.value };
        try {
          body.task = JSON.parse(task.value);
        } catch (err) {
          showError("task", `not valid JSON: ${err.message}`);
          return;
        }
        if (name.value) body.name = name.value;
        if (labels.value.trim()) {
          body.labels = {};
          for (const part of labels.value.split(/[,\n]/).map((s) => s.trim()).filter(Boolean)) {
            const at = part.indexOf("=");
            if (at <= 0) {
              showError("labels", `write each label name=value (${part})`);
              return;
            }
            body.labels[part.slice(0, at).trim()] = part.slice(at + 1).trim();
          }
        }
        if (timeout.value.trim()) {
          const n = Number(timeout.value);
          body.timeout_s = Number.isFinite(n) ? n : timeout.value; // the API says what is wrong
        }
        const headers = key.value ? { "Idempotency-Key": key.value } : {};
        try {
          const r = await call("POST", "/v1/tasks", { body, headers });
          location.hash = `#/task/${r.body.id}`;
        } catch (err) {
          if (err instanceof ApiError) showError(err.details.field, err.message);
          else general.textContent = String(err);
        }
      },
    },
    el("h1", { text: "Submit a task" }),
    field("Provider", provider, "provider"),
    field("Task (JSON)", task, "task"),
    field("Name", name, "name"),
    field("Labels", labels, "labels"),
    field("timeout_s", timeout, "timeout_s"),
    field("Idempotency key", key, "idempotency_key"),
    general,
    el("button", { type: "submit", text: "Submit" }),
  );
  main.append(form);
  return () => {};
}
