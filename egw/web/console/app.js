// The console's entry: sign-in (a token kept in sessionStorage), the token's scopes from
// /v1/whoami, the pages routed after "#" (#/tasks, #/task/<id>, #/submit), the health strip.

import { api, token } from "./api.js";
import { healthStrip } from "./health.js";
import { submitPage } from "./submit.js";
import { taskPage } from "./task.js";
import { tasksPage } from "./tasks.js";
import { clear, el, hasScope } from "./util.js";

const main = document.getElementById("main");
const who = document.getElementById("who");
const ctx = { scopes: [], providers: [], statuses: [], name: null };
let leave = () => {};

function signIn(message) {
  leave();
  leave = () => {};
  token.clear();
  clear(who);
  document.body.dataset.signedIn = "false";
  clear(main).append(document.getElementById("signin").content.cloneNode(true));
  const form = document.getElementById("signin-form");
  document.getElementById("signin-error").textContent = message || "";
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    token.set(document.getElementById("token").value.trim());
    await start();
  });
  document.getElementById("token").focus();
}

api.onUnauthorized = (err) => signIn(`Signed out: ${err.message}.`);

async function start() {
  let me;
  try {
    me = await api.get("/v1/whoami");
  } catch (err) {
    if (err.status !== 401) signIn(err.message);
    return;
  }
  ctx.name = me.name;
  ctx.scopes = me.scopes;
  try {
    const doc = await api.get("/v1/openapi.json");
    ctx.statuses = doc.components.schemas.TaskState.enum;
  } catch {
    ctx.statuses = ["pending", "queued", "running", "cancelling", "cancel_failed", "succeeded", "failed", "cancelled", "timed_out"];
  }
  await health; // the providers, for the filters and the submit page
  document.body.dataset.signedIn = "true";
  for (const link of document.querySelectorAll("[data-scope]")) link.hidden = !hasScope(ctx.scopes, link.dataset.scope);
  clear(who).append(
    el("span", { class: "muted", "data-testid": "whoami", text: `${me.name} (${me.scopes.join(", ")})` }),
    el("button", { type: "button", text: "Sign out", onclick: () => signIn() }),
  );
  route();
}

function route() {
  if (document.body.dataset.signedIn !== "true") return;
  leave();
  clear(main);
  const hash = location.hash.replace(/^#/, "") || "/tasks";
  const [path, q] = hash.split("?");
  const params = new URLSearchParams(q || "");
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("current", path.startsWith(`/${a.dataset.nav}`));
  const task = path.match(/^\/task\/([^/]+)$/);
  if (task) leave = taskPage(main, ctx, decodeURIComponent(task[1]));
  else if (path === "/submit" && hasScope(ctx.scopes, "tasks:write")) leave = submitPage(main, ctx);
  else leave = tasksPage(main, ctx, params);
}

window.addEventListener("hashchange", route);
const health = healthStrip(document.getElementById("health"), (providers) => (ctx.providers = providers));
if (token.get()) start();
else signIn();
