// ANSI colour codes in log lines, as DOM nodes: SGR sequences (ESC [ ... m) become spans with
// classes (style.css gives the colours); every other escape sequence is dropped. The text is
// only ever set with textContent: a line is never markup, whatever it holds.

const ESCAPE = /\x1b\[([0-9;?]*)([A-Za-z])|\x1b/g;

/** A line split into runs of text and the classes (`ansi-fg-31`, `ansi-bold`...) in force. */
export function ansiRuns(line) {
  const runs = [];
  let style = { fg: null, bg: null, bold: false };
  let at = 0;
  for (const match of line.matchAll(ESCAPE)) {
    if (match.index > at) runs.push({ text: line.slice(at, match.index), classes: classesOf(style) });
    at = match.index + match[0].length;
    if (match[2] === "m") style = applySgr(style, match[1]);
  }
  if (at < line.length) runs.push({ text: line.slice(at), classes: classesOf(style) });
  return runs;
}

function applySgr(style, params) {
  const next = { ...style };
  for (const part of params === "" ? ["0"] : params.split(";")) {
    const code = Number(part || "0");
    if (code === 0) Object.assign(next, { fg: null, bg: null, bold: false });
    else if (code === 1) next.bold = true;
    else if (code === 22) next.bold = false;
    else if (code === 39) next.fg = null;
    else if (code === 49) next.bg = null;
    else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) next.fg = code;
    else if ((code >= 40 && code <= 47) || (code >= 100 && code <= 107)) next.bg = code;
  }
  return next;
}

function classesOf(style) {
  const classes = [];
  if (style.fg !== null) classes.push(`ansi-fg-${style.fg}`);
  if (style.bg !== null) classes.push(`ansi-bg-${style.bg}`);
  if (style.bold) classes.push("ansi-bold");
  return classes;
}

/** The line's text nodes and spans, appended to `parent`. */
export function appendAnsi(parent, line) {
  for (const { text, classes } of ansiRuns(line)) {
    if (!classes.length) {
      parent.append(document.createTextNode(text));
      continue;
    }
    const span = document.createElement("span");
    span.className = classes.join(" ");
    span.textContent = text;
    parent.append(span);
  }
}
