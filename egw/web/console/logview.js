// A task's log in a window: at most MAX_BLOCKS blocks of BLOCK bytes are in the DOM, whatever
// the log's size. Scrolling near either edge reads the next block with the logs route's
// window read (?offset=&limit=) and drops the farthest one; the live tail comes from the
// SSE stream (resumed with Last-Event-ID) and is appended while the window holds the end.
//
// Blocks are contiguous byte ranges of the output [start, end) (offsets of the whole output,
// whichever stream is shown). A line that crosses a block boundary is drawn by the block it
// ends in: each block draws the previous block's unfinished last line and its own lines up to
// its last newline; the last block also draws its own unfinished line.

import { call, follow } from "./api.js";
import { newState, renderLine } from "./ansi.js";
import { clear, el } from "./util.js";

export const BLOCK = 16 * 1024;
const MAX_BLOCKS = 4;
const EDGE_PX = 400;
const NL = 10;

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function lastNewline(bytes) {
  return bytes.lastIndexOf(NL);
}

function b64bytes(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export class LogView {
  constructor(taskId, { onStatus = () => {}, onEnd = () => {} } = {}) {
    this.taskId = taskId;
    this.onStatus = onStatus;
    this.onEnd = onEnd;
    this.stream = "";
    this.blocks = []; // {start, end, bytes, node}
    this.size = 0; // bytes of output known so far (of the whole output)
    this.ssePos = null; // where the live stream is
    this.following = true;
    this.loading = false;
    this.programmatic = false;
    this.pane = el("div", { class: "log", tabindex: "0", "data-testid": "log" });
    this.pane.addEventListener("scroll", () => this.scrolled());
    this.where = el("span", { class: "log-where muted" });
    this.state = el("span", { class: "log-state muted" });
    this.followBox = el("input", { type: "checkbox", checked: true, onchange: () => this.setFollow(this.followBox.checked) });
    this.slider = el("input", { type: "range", min: "0", max: "0", value: "0", class: "log-slider", "aria-label": "position in the log", onchange: () => this.go(Number(this.slider.value)) });
    const pick = el(
      "select",
      { "aria-label": "stream", onchange: (e) => this.setStream(e.target.value) },
      el("option", { value: "", text: "stdout + stderr" }),
      el("option", { value: "stdout", text: "stdout" }),
      el("option", { value: "stderr", text: "stderr" }),
    );
    this.tools = el(
      "div",
      { class: "log-tools" },
      pick,
      el("label", {}, this.followBox, " follow"),
      el("button", { type: "button", onclick: () => this.go(0), text: "Start" }),
      el("button", { type: "button", onclick: () => this.toEnd(), text: "Jump to end" }),
      el("button", { type: "button", onclick: () => this.download(), text: "Download" }),
      this.slider,
      this.where,
      this.state,
    );
    this.root = el("section", { class: "logview" }, this.tools, this.pane);
  }

  async start() {
    this.stopped = false;
    // the first window is read again after a failure (a dropped connection), then it goes live
    for (let wait = 500; !this.stopped; wait = Math.min(5000, wait * 2)) {
      try {
        await this.jump(null);
        break;
      } catch (err) {
        if (err.status && err.status < 500) throw err;
        this.state.textContent = "reconnecting";
        await new Promise((r) => setTimeout(r, wait));
      }
    }
    if (!this.stopped) this.live();
  }

  stop() {
    this.stopped = true;
    if (this.sse) this.sse.stop();
    this.sse = null;
  }

  /** A window read for scrolling: a failure (a dropped connection) leaves the window as it is;
   *  the next scroll, or the next live output, asks again. */
  async tryRead(offset, limit) {
    try {
      return await this.read(offset, limit);
    } catch {
      return null;
    }
  }

  params(extra) {
    return { stream: this.stream || null, ...extra };
  }

  live() {
    this.stop();
    // the stream starts where the window ends: what it sends next is the window's next bytes
    const last = this.blocks[this.blocks.length - 1];
    this.ssePos = last ? last.end : 0;
    this.sse = follow(`/v1/tasks/${this.taskId}/logs`, {
      params: this.params({}),
      lastId: this.ssePos,
      untilEnd: true,
      onState: (s) => (this.state.textContent = s === "live" ? "" : s),
      onEvent: (f) => this.frame(f),
    });
  }

  frame(f) {
    if (f.event === "log" || f.event === "log-b64") {
      const data = JSON.parse(f.data);
      const bytes = f.event === "log" ? new TextEncoder().encode(data.text) : b64bytes(data.base64);
      const end = Number(f.id);
      const from = this.ssePos;
      this.ssePos = end;
      this.size = Math.max(this.size, end);
      const last = this.blocks[this.blocks.length - 1];
      // appended only where the window ends; otherwise a window read fetches it when needed
      if (last && last.end === from) this.append(bytes, end);
      this.after();
    } else if (f.event === "status") {
      this.onStatus(JSON.parse(f.data));
    } else if (f.event === "end") {
      this.onEnd(JSON.parse(f.data));
    }
  }

  append(bytes, end) {
    const last = this.blocks[this.blocks.length - 1];
    if (last && last.bytes.length < BLOCK) {
      last.bytes = concat(last.bytes, bytes);
      last.end = end;
      this.dirty(last);
    } else {
      const start = last ? last.end : 0;
      this.push({ start, end, bytes });
    }
  }

  dirty(block) {
    block.stale = true;
    if (this.frameQueued) return;
    this.frameQueued = true;
    requestAnimationFrame(() => {
      this.frameQueued = false;
      for (const b of this.blocks) if (b.stale) this.draw(b);
      this.after();
    });
  }

  /** Adds a block at the end, dropping the first when there are too many. */
  push(block) {
    const prev = this.blocks[this.blocks.length - 1];
    this.blocks.push(block);
    block.node = el("div", { class: "blk" });
    this.pane.appendChild(block.node);
    this.draw(block);
    if (prev) this.draw(prev);
    if (this.blocks.length > MAX_BLOCKS) {
      const gone = this.blocks.shift();
      const height = gone.node.offsetHeight;
      gone.node.remove();
      this.draw(this.blocks[0]);
      this.scrollBy(-height);
    }
  }

  /** Adds a block at the start, dropping the last when there are too many. */
  unshift(block) {
    const next = this.blocks[0];
    const before = this.pane.scrollHeight;
    this.blocks.unshift(block);
    block.node = el("div", { class: "blk" });
    this.pane.insertBefore(block.node, this.pane.firstChild);
    this.draw(block);
    if (next) this.draw(next);
    this.scrollBy(this.pane.scrollHeight - before);
    if (this.blocks.length > MAX_BLOCKS) {
      this.blocks.pop().node.remove();
      this.draw(this.blocks[this.blocks.length - 1]);
      this.setFollow(false);
    }
  }

  /** Scrolls the pane for the view's own reasons: the scroll event that follows is not the
   *  user's (and none follows when the position does not change). */
  scrollTo(top) {
    const max = this.pane.scrollHeight - this.pane.clientHeight;
    const target = Math.max(0, Math.min(max, top));
    if (Math.abs(this.pane.scrollTop - target) < 1) return;
    this.programmatic = true;
    this.pane.scrollTop = target;
  }

  scrollBy(px) {
    if (px) this.scrollTo(this.pane.scrollTop + px);
  }

  draw(block) {
    block.stale = false;
    const i = this.blocks.indexOf(block);
    const prev = i > 0 ? this.blocks[i - 1] : null;
    const isLast = i === this.blocks.length - 1;
    let bytes = block.bytes;
    if (prev) bytes = concat(prev.bytes.subarray(lastNewline(prev.bytes) + 1), bytes);
    if (!isLast) bytes = bytes.subarray(0, lastNewline(bytes) + 1);
    let text = new TextDecoder().decode(bytes);
    if (text.endsWith("\n")) text = text.slice(0, -1);
    const node = clear(block.node);
    if (!bytes.length) return;
    const state = newState();
    const frag = document.createDocumentFragment();
    for (const line of text.split("\n")) {
      const div = document.createElement("div");
      div.className = "ln";
      renderLine(div, line, state);
      frag.appendChild(div);
    }
    node.appendChild(frag);
  }

  async read(offset, limit) {
    const r = await call("GET", `/v1/tasks/${this.taskId}/logs`, { params: this.params({ offset, limit }) });
    this.size = Math.max(this.size, Number(r.headers.get("X-Egw-Size") || 0));
    return { bytes: new Uint8Array(r.body), end: Number(r.headers.get("X-Egw-Offset") || offset) };
  }

  /** Shows the window at byte `offset` (null: the end, following it). */
  async jump(offset) {
    this.loading = true;
    try {
      if (offset === null || this.size === 0) await this.read(0, 1);
      const atEnd = offset === null || offset >= this.size - BLOCK;
      let from = atEnd ? Math.max(0, this.size - BLOCK) : offset;
      from = atEnd ? from : Math.floor(from / BLOCK) * BLOCK;
      const got = await this.read(from, BLOCK);
      for (const b of this.blocks) b.node.remove();
      this.blocks = [];
      this.push({ start: from, end: got.end, bytes: got.bytes });
      this.setFollow(atEnd && offset === null ? true : this.following && atEnd);
      this.scrollTo(atEnd ? this.pane.scrollHeight : 0);
    } finally {
      this.loading = false;
    }
    this.after();
  }

  /** A jump the user asked for: a failed read says so and leaves the window as it was. */
  go(offset) {
    this.jump(offset).catch((err) => (this.state.textContent = `read failed: ${err.message}`));
  }

  toEnd() {
    this.setFollow(true);
    this.go(null);
  }

  setFollow(on) {
    this.following = on;
    this.followBox.checked = on;
    if (on) this.catchUp();
  }

  setStream(stream) {
    this.stop();
    this.stream = stream;
    this.size = 0;
    this.start().catch((err) => (this.state.textContent = err.message));
  }

  async catchUp() {
    const last = this.blocks[this.blocks.length - 1];
    if (this.loading || !last || last.end >= this.size) {
      if (this.following) this.bottom();
      return;
    }
    await this.more();
  }

  bottom() {
    this.scrollTo(this.pane.scrollHeight);
  }

  async more() {
    const last = this.blocks[this.blocks.length - 1];
    if (this.loading || !last || last.end >= this.size) return;
    this.loading = true;
    try {
      const got = await this.tryRead(last.end, BLOCK);
      if (got && got.end > last.end && this.blocks[this.blocks.length - 1] === last) this.push({ start: last.end, end: got.end, bytes: got.bytes });
    } finally {
      this.loading = false;
    }
    this.after();
  }

  async less() {
    const first = this.blocks[0];
    if (this.loading || !first || first.start <= 0) return;
    this.loading = true;
    try {
      const from = Math.floor((first.start - 1) / BLOCK) * BLOCK;
      const got = await this.tryRead(from, first.start - from);
      if (got && this.blocks[0] === first) this.unshift({ start: from, end: first.start, bytes: got.bytes });
    } finally {
      this.loading = false;
    }
    this.after();
  }

  scrolled() {
    if (this.programmatic) {
      this.programmatic = false;
    } else {
      const atBottom = this.pane.scrollHeight - this.pane.scrollTop - this.pane.clientHeight < 4;
      const last = this.blocks[this.blocks.length - 1];
      if (this.following && !atBottom) this.setFollow(false);
      else if (!this.following && atBottom && last && last.end >= this.size) this.setFollow(true);
    }
    if (this.pane.scrollTop < EDGE_PX) this.less();
    else if (this.pane.scrollHeight - this.pane.scrollTop - this.pane.clientHeight < EDGE_PX) this.more();
    this.where_();
  }

  after() {
    if (this.following) this.catchUp();
    this.where_();
  }

  where_() {
    const first = this.blocks[0];
    const last = this.blocks[this.blocks.length - 1];
    this.slider.max = String(this.size);
    if (first) this.slider.value = String(first.start);
    this.where.textContent = first ? `bytes ${first.start.toLocaleString()}–${last.end.toLocaleString()} of ${this.size.toLocaleString()}` : "no output yet";
  }

  async download() {
    const r = await call("GET", `/v1/tasks/${this.taskId}/logs`, { params: this.params({}) });
    const url = URL.createObjectURL(new Blob([r.body], { type: "text/plain" }));
    const a = el("a", { href: url, download: `${this.taskId}${this.stream ? `.${this.stream}` : ""}.log` });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
}
