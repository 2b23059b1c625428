// ANSI SGR colours of a log line as DOM spans (classes from style.css; 24-bit colours set
// through the CSSOM, which the page's CSP allows, never as a style attribute). Other escape
// sequences (cursor moves, erase line) are dropped.

const CSI = /\x1b\[([0-9;]*)([A-Za-z])|\x1b[()][0-9A-Za-z]|\x1b[^[]/g;

export function newState() {
  return { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false };
}

function colour256(n) {
  if (n < 16) return { cls: n };
  if (n < 232) {
    n -= 16;
    const v = (x) => (x === 0 ? 0 : 55 + x * 40);
    return { rgb: `rgb(${v(Math.floor(n / 36))},${v(Math.floor(n / 6) % 6)},${v(n % 6)})` };
  }
  const g = 8 + (n - 232) * 10;
  return { rgb: `rgb(${g},${g},${g})` };
}

function apply(state, params) {
  const p = params === "" ? [0] : params.split(";").map((x) => (x === "" ? 0 : Number(x)));
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === 0) Object.assign(state, newState());
    else if (c === 1) state.bold = true;
    else if (c === 2) state.dim = true;
    else if (c === 3) state.italic = true;
    else if (c === 4) state.underline = true;
    else if (c === 22) state.bold = state.dim = false;
    else if (c === 23) state.italic = false;
    else if (c === 24) state.underline = false;
    else if (c >= 30 && c <= 37) state.fg = { cls: c - 30 };
    else if (c >= 90 && c <= 97) state.fg = { cls: c - 90 + 8 };
    else if (c === 39) state.fg = null;
    else if (c >= 40 && c <= 47) state.bg = { cls: c - 40 };
    else if (c >= 100 && c <= 107) state.bg = { cls: c - 100 + 8 };
    else if (c === 49) state.bg = null;
    else if ((c === 38 || c === 48) && p[i + 1] === 5) {
      const col = colour256(p[i + 2] || 0);
      if (c === 38) state.fg = col;
      else state.bg = col;
      i += 2;
    } else if ((c === 38 || c === 48) && p[i + 1] === 2) {
      const col = { rgb: `rgb(${p[i + 2] || 0},${p[i + 3] || 0},${p[i + 4] || 0})` };
      if (c === 38) state.fg = col;
      else state.bg = col;
      i += 4;
    }
  }
}

function styled(text, state) {
  const plain = !state.fg && !state.bg && !state.bold && !state.dim && !state.italic && !state.underline;
  if (plain) return document.createTextNode(text);
  const span = document.createElement("span");
  span.textContent = text;
  if (state.fg && state.fg.cls !== undefined) span.classList.add(`f${state.fg.cls}`);
  else if (state.fg) span.style.color = state.fg.rgb;
  if (state.bg && state.bg.cls !== undefined) span.classList.add(`g${state.bg.cls}`);
  else if (state.bg) span.style.backgroundColor = state.bg.rgb;
  if (state.bold) span.classList.add("ab");
  if (state.dim) span.classList.add("ad");
  if (state.italic) span.classList.add("ai");
  if (state.underline) span.classList.add("au");
  return span;
}

/** Appends `line` to `parent` as text and spans; `state` carries over to the next line. */
export function renderLine(parent, line, state) {
  let last = 0;
  CSI.lastIndex = 0;
  let m;
  while ((m = CSI.exec(line)) !== null) {
    if (m.index > last) parent.appendChild(styled(line.slice(last, m.index), state));
    if (m[2] === "m") apply(state, m[1]);
    last = CSI.lastIndex;
  }
  if (last < line.length) parent.appendChild(styled(line.slice(last), state));
}
