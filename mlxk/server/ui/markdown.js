// Markdown to DOM nodes, for model output: a model's text is never parsed as HTML. Every piece of
// it becomes a text node or the text of an element this file creates (createElement and
// textContent only); raw HTML in the text stays visible as text; links are made only for http(s)
// URLs. What it reads: paragraphs, ATX headings, rules, block quotes, lists (nested, ordered or
// not, task boxes shown as text), fenced code blocks (with a copy button), GFM tables, and inline
// code spans, bold, italic, strikethrough, links, autolinks and backslash escapes.
// Text that is still streaming renders too: an open code fence runs to the end.

const MAX_DEPTH = 8; // quotes and lists nested deeper read as plain text: no stack to exhaust
const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( {0,12})([-*+]|\d{1,9}[.)])([ \t]+|$)/;
const TABLE_DELIMITER = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
const MAX_LINK_TEXT = 1000; // a "[" with no "]" this close is text (each "[" scans no further)
const MAX_CLOSERS = 64; // closing delimiters tried per opening one, for the same reason
const PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

// --- blocks ----------------------------------------------------------------------------------

/** The nodes of `text` rendered, in a DocumentFragment; `codeButton(code)`, when given, makes the
 * button shown on each code block (the page's copy button). */
export function renderMarkdown(text, codeButton) {
  const fragment = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  appendBlocks(fragment, lines, 0, codeButton);
  return fragment;
}

function appendBlocks(parent, lines, depth, codeButton) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const fence = line.match(FENCE);
    if (fence) {
      i = codeBlock(parent, lines, i, fence, codeButton);
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      const h = el(`h${heading[1].length}`);
      appendInline(h, heading[2] || "");
      parent.append(h);
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      parent.append(el("hr"));
      i += 1;
      continue;
    }
    if (depth < MAX_DEPTH && QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && QUOTE.test(lines[i])) inner.push(lines[i++].replace(QUOTE, ""));
      const quote = el("blockquote");
      appendBlocks(quote, inner, depth + 1, codeButton);
      parent.append(quote);
      continue;
    }
    if (depth < MAX_DEPTH && ITEM.test(line)) {
      i = list(parent, lines, i, depth, codeButton);
      continue;
    }
    if (startsTable(lines, i)) {
      const end = table(parent, lines, i);
      if (end > i) {
        i = end;
        continue;
      }
    }
    i = paragraph(parent, lines, i, depth);
  }
}

function startsTable(lines, i) {
  return i + 1 < lines.length && lines[i].includes("|") && TABLE_DELIMITER.test(lines[i + 1]);
}

function startsBlock(line, depth) {
  return (
    FENCE.test(line) || HEADING.test(line) || RULE.test(line) ||
    (depth < MAX_DEPTH && (QUOTE.test(line) || ITEM.test(line)))
  );
}

function paragraph(parent, lines, start, depth) {
  const p = el("p");
  let i = start;
  while (
    i < lines.length && lines[i].trim() &&
    (i === start || !(startsBlock(lines[i], depth) || startsTable(lines, i)))
  ) {
    if (i > start) p.append(el("br")); // a model's single line break is meant as one
    appendInline(p, lines[i].trim());
    i += 1;
  }
  parent.append(p);
  return i;
}

function codeBlock(parent, lines, start, fence, codeButton) {
  const marker = fence[1];
  const closing = new RegExp(`^ {0,3}${marker[0] === "`" ? "`" : "~"}{${marker.length},}[ \\t]*$`);
  const body = [];
  let i = start + 1;
  while (i < lines.length && !closing.test(lines[i])) body.push(lines[i++]);
  const code = body.join("\n");
  const figure = el("div", "code-block");
  const bar = el("div", "code-bar");
  const language = fence[2].replace(/[^\w+#.-]/g, "").slice(0, 24);
  bar.append(el("span", "code-lang", language || "text"));
  if (codeButton) bar.append(codeButton(code));
  const pre = el("pre");
  pre.append(el("code", null, code));
  figure.append(bar, pre);
  parent.append(figure);
  return i + 1; // past the closing fence (or the end, for an open one)
}

function list(parent, lines, start, depth, codeButton) {
  const first = lines[start].match(ITEM);
  const ordered = /\d/.test(first[2]);
  const indent = first[1].length;
  const listEl = el(ordered ? "ol" : "ul");
  if (ordered) {
    const number = parseInt(first[2], 10);
    if (number !== 1) listEl.start = number;
  }
  let i = start;
  let loose = false;
  const items = [];
  while (i < lines.length) {
    const m = lines[i].match(ITEM);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    const contentIndent = m[0].length;
    const body = [lines[i].slice(m[0].length)];
    i += 1;
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) {
        // a blank line belongs to the item when the item goes on after it
        const next = lines[i + 1];
        if (next !== undefined && next.trim() && leading(next) >= Math.max(contentIndent, indent + 2)) {
          body.push("");
          loose = true;
          i += 1;
          continue;
        }
        break;
      }
      const sibling = line.match(ITEM);
      if (sibling && sibling[1].length <= indent) break;
      if (leading(line) < Math.min(contentIndent, indent + 2) && startsBlock(line, depth)) break;
      body.push(line.slice(Math.min(leading(line), contentIndent)));
      i += 1;
    }
    items.push(body);
    if (i < lines.length && !lines[i].trim() && ITEM.test(lines[i + 1] || "")) {
      const next = lines[i + 1].match(ITEM);
      if (next[1].length === indent) {
        loose = true;
        i += 1; // a blank line between two items of this list
      }
    }
  }
  for (const body of items) {
    const li = el("li");
    if (!loose && body.length === 1) appendInline(li, body[0]);
    else appendBlocks(li, body, depth + 1, codeButton);
    listEl.append(li);
  }
  parent.append(listEl);
  return i;
}

function leading(line) {
  return line.length - line.trimStart().length;
}

// --- tables ----------------------------------------------------------------------------------

function cells(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  const found = [];
  let current = "";
  for (let i = 0; i < row.length; i += 1) {
    if (row[i] === "\\" && row[i + 1] === "|") {
      current += "|";
      i += 1;
    } else if (row[i] === "|") {
      found.push(current.trim());
      current = "";
    } else {
      current += row[i];
    }
  }
  found.push(current.trim());
  return found;
}

function table(parent, lines, start) {
  const head = cells(lines[start]);
  const aligns = cells(lines[start + 1]).map((spec) => {
    const left = spec.startsWith(":");
    const right = spec.endsWith(":");
    return left && right ? "center" : right ? "right" : left ? "left" : null;
  });
  if (head.length !== aligns.length) return start;
  const wrap = el("div", "table-wrap");
  const tableEl = el("table");
  const thead = el("thead");
  thead.append(row("th", head, aligns));
  tableEl.append(thead);
  const tbody = el("tbody");
  let i = start + 2;
  while (i < lines.length && lines[i].trim() && lines[i].includes("|") && !startsBlock(lines[i], 0)) {
    const values = cells(lines[i]).slice(0, head.length);
    while (values.length < head.length) values.push("");
    tbody.append(row("td", values, aligns));
    i += 1;
  }
  if (tbody.children.length) tableEl.append(tbody);
  wrap.append(tableEl);
  parent.append(wrap);
  return i;
}

function row(tag, values, aligns) {
  const tr = el("tr");
  values.forEach((value, index) => {
    const cell = el(tag, aligns[index] ? `align-${aligns[index]}` : null);
    appendInline(cell, value);
    tr.append(cell);
  });
  return tr;
}

// --- inline ----------------------------------------------------------------------------------

/** Appends the inline markdown of `text` to `parent` as nodes. */
export function appendInline(parent, text) {
  new InlineParser(text).parseInto(parent, 0, text.length, 0);
}

class InlineParser {
  constructor(text) {
    this.text = text;
    // per delimiter, a position from which no closing delimiter is left: a search from there or
    // later fails at once (keeps text full of unmatched `*` linear, not quadratic)
    this.noCloserFrom = new Map();
  }

  parseInto(parent, start, end, depth) {
    const text = this.text;
    let plain = "";
    const flush = () => {
      if (plain) parent.append(document.createTextNode(plain));
      plain = "";
    };
    let i = start;
    while (i < end) {
      const c = text[i];
      if (c === "\\" && i + 1 < end && PUNCTUATION.includes(text[i + 1])) {
        plain += text[i + 1];
        i += 2;
        continue;
      }
      if (c === "`") {
        const span = this.codeSpan(i, end);
        if (span) {
          flush();
          parent.append(el("code", null, span.code));
          i = span.next;
          continue;
        }
        const run = runLength(text, i, "`");
        plain += text.slice(i, i + run);
        i += run;
        continue;
      }
      if (c === "[" && depth < MAX_DEPTH) {
        const link = this.link(i, end);
        if (link) {
          flush();
          const a = anchor(link.url);
          if (a) {
            this.parseInto(a, link.textStart, link.textEnd, depth + 1);
            parent.append(a);
          } else {
            plain += text.slice(i, link.next); // not a web link: shown as it was written
          }
          i = link.next;
          continue;
        }
      }
      if (c === "<") {
        const close = this.find(">", i + 1, end);
        if (close > 0 && /^<https?:\/\/[^\s<>]+>$/i.test(text.slice(i, close + 1))) {
          const a = anchor(text.slice(i + 1, close));
          if (a) {
            flush();
            a.textContent = text.slice(i + 1, close);
            parent.append(a);
            i = close + 1;
            continue;
          }
        }
      }
      if ((c === "h" || c === "H") && (i === start || /[\s(]/.test(text[i - 1]))) {
        const bare = text.slice(i, end).match(/^https?:\/\/[^\s<>]+/i);
        if (bare) {
          const url = bare[0].replace(/[.,;:!?)\]'"*_]+$/, "");
          const a = anchor(url);
          if (a) {
            flush();
            a.textContent = url;
            parent.append(a);
            i += url.length;
            continue;
          }
        }
      }
      if ((c === "*" || c === "_" || c === "~") && depth < MAX_DEPTH) {
        const span = this.emphasis(i, start, end);
        if (span) {
          flush();
          const node = el(span.tag);
          this.parseInto(node, span.innerStart, span.innerEnd, depth + 1);
          parent.append(node);
          i = span.next;
          continue;
        }
        const run = runLength(text, i, c);
        plain += text.slice(i, i + run);
        i += run;
        continue;
      }
      plain += c;
      i += 1;
    }
    flush();
  }

  codeSpan(i, end) {
    const text = this.text;
    const run = runLength(text, i, "`");
    const fence = "`".repeat(run);
    let from = i + run;
    while (true) {
      const close = this.find(fence, from, end);
      if (close < 0) return null;
      if (runLength(text, close, "`") === run) {
        let code = text.slice(i + run, close).replace(/\n/g, " ");
        if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ") && code.trim()) {
          code = code.slice(1, -1);
        }
        return { code, next: close + run };
      }
      from = close + runLength(text, close, "`");
    }
  }

  link(i, end) {
    // [text](url) with balanced brackets in the text and no spaces in the url
    const text = this.text;
    let level = 0;
    let j = i;
    const limit = Math.min(end, i + MAX_LINK_TEXT);
    for (; j < limit; j += 1) {
      if (text[j] === "\\") j += 1;
      else if (text[j] === "[") level += 1;
      else if (text[j] === "]" && --level === 0) break;
    }
    if (j >= limit || text[j + 1] !== "(") return null;
    const close = this.find(")", j + 2, end);
    if (close < 0) return null;
    const target = text.slice(j + 2, close).trim();
    const url = target.split(/\s+/)[0].replace(/^<|>$/g, "");
    if (!url) return null;
    return { textStart: i + 1, textEnd: j, url, next: close + 1 };
  }

  emphasis(i, start, end) {
    const text = this.text;
    const c = text[i];
    const run = runLength(text, i, c);
    const size = c === "~" ? 2 : Math.min(run, 2);
    if (c === "~" && run !== 2) return null;
    const after = text[i + size];
    if (after === undefined || /\s/.test(after)) return null; // not left-flanking
    if (c === "_" && i > start && /\w/.test(text[i - 1])) return null; // snake_case stays text
    const delimiter = c.repeat(size);
    let from = i + size + 1;
    for (let tries = 0; tries < MAX_CLOSERS; tries += 1) {
      const close = this.find(delimiter, from, end);
      if (close < 0) return null;
      const before = text[close - 1];
      const closeRun = runLength(text, close, c);
      const next = text[close + size];
      const rightFlanking = !/\s/.test(before);
      const wordAfter = c === "_" && next !== undefined && /\w/.test(next);
      if (rightFlanking && !wordAfter && (size === 2 || closeRun !== 2 || run === 1)) {
        const tag = c === "~" ? "del" : size === 2 ? "strong" : "em";
        return { tag, innerStart: i + size, innerEnd: close, next: close + size };
      }
      from = close + Math.max(closeRun, 1);
    }
    return null;
  }

  find(needle, from, end) {
    const blocked = this.noCloserFrom.get(needle);
    if (blocked !== undefined && from >= blocked) return -1;
    const found = this.text.indexOf(needle, from);
    if (found < 0) this.noCloserFrom.set(needle, Math.min(from, blocked ?? from));
    return found < 0 || found + needle.length > end ? -1 : found;
  }
}

function runLength(text, i, c) {
  let j = i;
  while (text[j] === c) j += 1;
  return j - i;
}

/** A link to `url` when it is an absolute http(s) URL, else null. It opens in a new tab, without
 * access to this page, and shows its address in the tooltip. */
function anchor(url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return null;
  const a = el("a");
  a.href = parsed.href;
  a.title = parsed.href;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  return a;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
