// The console's one way to talk to egw: fetch with the bearer token from sessionStorage
// (never in a URL, never a cookie), JSON errors as ApiError, and SSE read from a fetch
// stream (EventSource cannot send headers) that resumes with Last-Event-ID, as the CLI does.

const KEY = "egw.token";

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

function headers(extra) {
  const out = new Headers(extra || {});
  const t = token.get();
  if (t) out.set("Authorization", `Bearer ${t}`);
  return out;
}

async function failure(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    // not JSON: a proxy's page
  }
  const err = body && body.error;
  if (err) return new ApiError(resp.status, err.code, err.message, err.details);
  return new ApiError(resp.status, "http_error", `HTTP ${resp.status}`, {});
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else if (v !== null && v !== undefined && v !== "") q.append(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** A JSON call; resolves to {body, headers}, or throws ApiError (onUnauthorized first on 401). */
export async function call(method, path, { body, headers: extra, params } = {}) {
  const init = { method, headers: headers(extra), cache: "no-store" };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    init.headers.set("Content-Type", "application/json");
  }
  const resp = await fetch(path + query(params), init);
  if (!resp.ok) {
    const err = await failure(resp);
    if (resp.status === 401) api.onUnauthorized(err);
    throw err;
  }
  const type = resp.headers.get("Content-Type") || "";
  return { body: type.includes("json") ? await resp.json() : await resp.arrayBuffer(), headers: resp.headers };
}

export const api = {
  onUnauthorized: () => {},
  get: (path, params) => call("GET", path, { params }).then((r) => r.body),
  post: (path, body, extra) => call("POST", path, { body, headers: extra }).then((r) => r.body),
};

/** Parses a text/event-stream incrementally (WHATWG rules: fields, blank-line dispatch,
 *  comments, CR/LF/CRLF line ends); `push(text)` calls `emit({event, data, id})`. */
export class SSEParser {
  constructor(emit) {
    this.emit = emit;
    this.buf = "";
    this.reset();
  }
  reset() {
    this.event = "";
    this.data = [];
    this.id = null;
  }
  push(text) {
    this.buf += text;
    let at;
    while ((at = this.buf.search(/\r\n|\r|\n/)) >= 0) {
      if (this.buf[at] === "\r" && at === this.buf.length - 1) break; // maybe a CRLF cut in two
      const line = this.buf.slice(0, at);
      this.buf = this.buf.slice(at + (this.buf.startsWith("\r\n", at) ? 2 : 1));
      this.line(line);
    }
  }
  line(line) {
    if (line === "") {
      if (this.data.length) this.emit({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      const id = this.id;
      this.reset();
      this.id = id; // the last id stays until another is given
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "event") this.event = value;
    else if (name === "data") this.data.push(value);
    else if (name === "id") this.id = value;
  }
}

/** Follows an SSE route until `stop()` or (with `untilEnd`) its `end` event; after a dropped
 *  connection it reconnects with `Last-Event-ID` set to the last id seen, so nothing is
 *  lost or doubled. `onEvent(frame)`, `onState("live"|"reconnecting"|"ended")`. */
export function follow(path, { params, lastId = null, onEvent, onState = () => {}, onError = () => {}, untilEnd = false }) {
  const controller = new AbortController();
  let stopped = false;
  let failures = 0;
  const run = async () => {
    while (!stopped) {
      const h = headers({ Accept: "text/event-stream" });
      if (lastId !== null) h.set("Last-Event-ID", String(lastId));
      let ended = false;
      try {
        const resp = await fetch(path + query(params), { headers: h, signal: controller.signal, cache: "no-store" });
        if (!resp.ok) {
          const err = await failure(resp);
          if (resp.status === 401) api.onUnauthorized(err);
          onError(err);
          if (resp.status < 500) return;
        } else {
          onState("live");
          const reader = resp.body.getReader();
          const decoder = new TextDecoder();
          const parser = new SSEParser((frame) => {
            failures = 0;
            if (frame.id !== null) lastId = frame.id;
            onEvent(frame);
            if (untilEnd && frame.event === "end") ended = true;
          });
          for (;;) {
            const { value, done } = await reader.read();
            if (done || stopped) break;
            parser.push(decoder.decode(value, { stream: true }));
            if (ended) break;
          }
          if (ended) {
            controller.abort();
            onState("ended");
            return;
          }
        }
      } catch (err) {
        if (stopped) return;
      }
      if (stopped) return;
      failures += 1;
      onState("reconnecting");
      await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** Math.min(failures, 5))));
    }
  };
  run();
  return {
    stop() {
      stopped = true;
      controller.abort();
    },
  };
}
