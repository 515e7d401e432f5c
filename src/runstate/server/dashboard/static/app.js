// The runstate dashboard: a single page over the /v1 JSON API, signed in by a session cookie.
// Plain JS, no build step, no third-party code. Views are re-rendered from the API on every
// navigation (location.hash: #/stores, #/stores/<name>?prefix=..., #/usage, #/tokens).
// Values are never decoded and re-encoded: each record's value is kept as the exact JSON text
// the server sent, pretty-printed token by token, and an edit sends the editor's text as it is,
// so big integers, number forms and object key order survive a round trip.
"use strict";

const PAGE_SIZE = 100;
const FOLD_LINES = 8;
const FOLD_CHARS = 1200;
const STORE_NAME = /^[A-Za-z0-9_.:-]{1,128}$/;

const app = document.getElementById("app");
const toasts = document.getElementById("toasts");
let session = null; // {token: {id, role, stores, workspace}, csrf}
let renderSeq = 0;

// --- DOM helpers -------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function toast(message, kind = "ok") {
  const el = h("div", { class: "toast " + kind }, message);
  toasts.append(el);
  setTimeout(() => el.remove(), 4000);
}

// --- formatting --------------------------------------------------------------------------

const numberFormat = new Intl.NumberFormat("en-US");
const fmtInt = (n) => numberFormat.format(n);

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

// `used` as a percentage of `total`, to one decimal.
const percentOf = (used, total) => (total ? (100 * used) / total : 0).toFixed(1);

function fmtDuration(seconds) {
  const s = Math.abs(seconds);
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400 * 2) return `${+(s / 3600).toFixed(s < 36000 ? 1 : 0)} h`;
  return `${Math.round(s / 86400)} d`;
}

function fmtRelative(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  if (Math.abs(seconds) < 5) return "just now";
  return seconds > 0 ? `in ${fmtDuration(seconds)}` : `${fmtDuration(seconds)} ago`;
}

function timeEl(iso) {
  if (!iso) return h("span", { class: "muted" }, "never");
  const absolute = new Date(iso).toLocaleString("en-GB", { timeZone: "UTC" }) + " UTC";
  return h("time", { datetime: iso, title: absolute }, fmtRelative(iso));
}

// --- JSON kept as text -------------------------------------------------------------------

const STRING = /"(?:[^"\\]|\\.)*"/y;
const PLAIN_RUN = /[^"{}[\]]+/y;
const SPACE = " \t\n\r";

// JSON.parse of an API answer, except that the members named "value" `depth` containers deep
// (3 in a page of records, 1 in one record) are kept as their raw JSON text: {raw: "..."}.
function parseKeepingValues(text, depth) {
  let i = 0;
  const ws = () => {
    while (i < text.length && SPACE.includes(text[i])) i++;
  };
  const str = () => {
    STRING.lastIndex = i;
    if (!STRING.exec(text)) throw new SyntaxError(`bad string at ${i}`);
    const start = i;
    i = STRING.lastIndex;
    return text.slice(start, i);
  };
  const skip = () => {
    ws();
    const start = i;
    if (text[i] === "{" || text[i] === "[") {
      let level = 0;
      do {
        const c = text[i];
        if (c === '"') str();
        else if (c === "{" || c === "[") (level++, i++);
        else if (c === "}" || c === "]") (level--, i++);
        else {
          PLAIN_RUN.lastIndex = i;
          PLAIN_RUN.exec(text);
          i = PLAIN_RUN.lastIndex;
        }
      } while (level > 0 && i < text.length);
    } else if (text[i] === '"') str();
    else while (i < text.length && !",}] \t\n\r".includes(text[i])) i++;
    return text.slice(start, i);
  };
  const value = (level) => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const out = {};
      ws();
      if (text[i] === "}") return (i++, out);
      for (;;) {
        ws();
        const key = JSON.parse(str());
        ws();
        i++; // ':'
        out[key] = key === "value" && level + 1 === depth ? { raw: skip() } : value(level + 1);
        ws();
        if (text[i++] !== ",") return out;
      }
    }
    if (c === "[") {
      i++;
      const out = [];
      ws();
      if (text[i] === "]") return (i++, out);
      for (;;) {
        out.push(value(level + 1));
        ws();
        if (text[i++] !== ",") return out;
      }
    }
    return JSON.parse(skip());
  };
  return value(0);
}

// The end of the container starting at raw[i] if it closes within `limit` characters, else -1.
function closesWithin(raw, i, limit) {
  let level = 0;
  const stop = Math.min(raw.length, i + limit);
  while (i < stop) {
    const c = raw[i];
    if (c === '"') {
      STRING.lastIndex = i;
      if (!STRING.exec(raw)) return -1;
      i = STRING.lastIndex;
      continue;
    }
    if (c === "{" || c === "[") level++;
    else if (c === "}" || c === "]") level--;
    i++;
    if (level === 0) return i <= stop ? i : -1;
  }
  return -1;
}

// A short container on one line: `{"a": 1, "b": [1, 2]}`.
function inline(raw) {
  let out = "";
  for (let i = 0; i < raw.length; ) {
    const c = raw[i];
    if (c === '"') {
      STRING.lastIndex = i;
      STRING.exec(raw);
      out += raw.slice(i, STRING.lastIndex);
      i = STRING.lastIndex;
      continue;
    }
    if (!SPACE.includes(c)) out += c === "," ? ", " : c === ":" ? ": " : c;
    i++;
  }
  return out;
}

// Pretty-print JSON text token by token (nothing is decoded, so nothing can change); short
// containers stay on one line.
function formatJson(raw) {
  const out = [];
  const n = raw.length;
  let level = 0;
  let i = 0;
  const pad = () => "\n" + "  ".repeat(level);
  while (i < n) {
    const c = raw[i];
    if (c === '"') {
      STRING.lastIndex = i;
      STRING.exec(raw);
      out.push(raw.slice(i, STRING.lastIndex));
      i = STRING.lastIndex;
    } else if (SPACE.includes(c)) i++;
    else if ((c === "{" || c === "[") && closesWithin(raw, i, 60) > 0) {
      const end = closesWithin(raw, i, 60);
      out.push(inline(raw.slice(i, end)));
      i = end;
    } else if (c === "{" || c === "[") {
      let j = i + 1;
      while (j < n && SPACE.includes(raw[j])) j++;
      if (raw[j] === (c === "{" ? "}" : "]")) {
        out.push(c + raw[j]);
        i = j + 1;
      } else {
        level++;
        out.push(c + pad());
        i++;
      }
    } else if (c === "}" || c === "]") {
      level--;
      out.push(pad() + c);
      i++;
    } else if (c === ",") {
      out.push("," + pad());
      i++;
    } else if (c === ":") {
      out.push(": ");
      i++;
    } else {
      let j = i;
      while (j < n && !'{}[],:" \t\n\r'.includes(raw[j])) j++;
      out.push(raw.slice(i, j));
      i = j;
    }
  }
  return out.join("");
}

const TOKEN = /("(?:[^"\\]|\\.)*")(\s*:)?|(-?\d[\d.eE+-]*)|\b(true|false|null)\b/g;

// Highlighted JSON as DOM nodes (text nodes only: nothing from a value is parsed as HTML).
function highlight(text) {
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const m of text.matchAll(TOKEN)) {
    if (m.index > last) frag.append(text.slice(last, m.index));
    const kind = m[1] ? (m[2] ? "k" : "s") : m[3] ? "n" : "l";
    frag.append(h("span", { class: "j-" + kind }, m[1] || m[0]));
    if (m[2]) frag.append(m[2]);
    last = m.index + m[0].length;
  }
  if (last < text.length) frag.append(text.slice(last));
  return frag;
}

function jsonView(raw) {
  const text = formatJson(raw);
  const lines = text.split("\n");
  const pre = h("pre", { class: "json" });
  const folded = lines.length > FOLD_LINES || text.length > FOLD_CHARS;
  if (!folded) return append(pre, [highlight(text)]);
  let short = lines.slice(0, FOLD_LINES).join("\n");
  if (short.length > FOLD_CHARS) short = short.slice(0, FOLD_CHARS);
  pre.append(highlight(short + " …"));
  const more = `Show all (${fmtInt(lines.length)} lines, ${fmtBytes(raw.length)})`;
  const toggle = h("button", { class: "link fold", type: "button", "aria-expanded": "false" }, more);
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") === "true";
    pre.replaceChildren(highlight(open ? short + " …" : text));
    toggle.setAttribute("aria-expanded", String(!open));
    toggle.textContent = open ? more : "Fold";
  });
  return h("div", { class: "folded" }, pre, toggle);
}

// Where JSON.parse stopped, as "line L, column C" (Chromium names the position).
function jsonError(text) {
  try {
    JSON.parse(text);
    return null;
  } catch (err) {
    const found = /position (\d+)/.exec(err.message);
    let message = err.message
      .replace(/^JSON\.parse: /, "")
      .replace(/ in JSON at position \d+/, "")
      .replace(/, "[^]*" is not valid JSON$/, "");
    if (found && !/line \d+/.test(message)) {
      const before = text.slice(0, +found[1]).split("\n");
      message += ` (line ${before.length}, column ${before[before.length - 1].length + 1})`;
    }
    return message;
  }
}

// --- the API -----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, error) {
    super(error.message);
    this.status = status;
    this.code = error.code;
    this.details = error.details || {};
  }
}

const enc = (segment) => encodeURIComponent(segment).replace(/\./g, "%2E");

async function api(method, path, body, { depth = 0 } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = session ? session.csrf : "";
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = typeof body === "string" ? body : JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  } catch {
    throw new ApiError(0, { code: "unavailable", message: "The server cannot be reached." });
  }
  const text = await response.text();
  if (!response.ok) {
    let error = { code: "unavailable", message: `HTTP ${response.status}` };
    try {
      error = JSON.parse(text).error || error;
    } catch {}
    if (response.status === 401 && session && !path.startsWith("/dashboard/")) {
      session = null;
      toast("Your session has ended. Sign in again.", "error");
      await start();
    }
    throw new ApiError(response.status, error);
  }
  return depth ? parseKeepingValues(text, depth) : JSON.parse(text);
}

async function refreshSession() {
  const info = await api("GET", "/dashboard/session");
  session = info.signed_in ? info : null;
  return info;
}

const can = {
  write: () => session.token.role !== "read",
  manageTokens: () => session.token.role === "admin" && session.token.stores === null,
};

// --- dialogs -----------------------------------------------------------------------------

// A modal dialog (focus kept inside, Escape closes). `build(close)` returns its body.
function openDialog(title, build, { wide = false } = {}) {
  const dialog = h("dialog", { class: wide ? "wide" : "", "aria-labelledby": "dialog-title" });
  // Removed at once, not only from its (asynchronous) close event: a dialog opened right after
  // this one closes (a new token's) must be the only dialog in the page.
  const close = () => {
    dialog.close();
    dialog.remove();
  };
  dialog.addEventListener("close", () => dialog.remove());
  dialog.append(h("h2", { id: "dialog-title" }, title), build(close));
  document.body.append(dialog);
  dialog.showModal();
  const focus = dialog.querySelector("[autofocus]");
  if (focus) focus.focus();
  return dialog;
}

function confirmDialog({ title, message, action, danger = true, run }) {
  openDialog(title, (close) => {
    const error = h("p", { class: "error", role: "alert", hidden: true });
    const ok = h("button", { class: danger ? "danger" : "primary", type: "submit" }, action);
    const form = h(
      "form",
      { method: "dialog" },
      h("div", { class: "message" }, message),
      error,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", autofocus: true, onclick: close }, "Cancel"),
        ok,
      ),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      ok.disabled = true;
      try {
        await run();
        close();
      } catch (err) {
        error.textContent = err.message;
        error.hidden = false;
        ok.disabled = false;
      }
    });
    return form;
  });
}

function field(label, control, hint) {
  const input = control.matches("input, select, textarea") ? control : control.querySelector("input, select, textarea");
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    control,
    hint ? h("p", { class: "hint" }, hint) : null,
  );
}

// --- the shell -----------------------------------------------------------------------------

function shell(active, ...content) {
  const link = (href, name, label) =>
    h("a", { href, class: active === name ? "active" : "", "aria-current": active === name ? "page" : null }, label);
  const token = session.token;
  const scope = token.stores ? `stores: ${token.stores.join(", ")}` : "all stores";
  const main = h("main", { id: "main", tabindex: "-1" }, content);
  return h(
    "div",
    { class: "layout" },
    h(
      "header",
      { class: "top" },
      h("a", { class: "brand", href: "#/stores" }, h("img", { src: "/dashboard/icon.svg", alt: "" }), "runstate"),
      h(
        "nav",
        { "aria-label": "Main" },
        link("#/stores", "stores", "Data stores"),
        link("#/usage", "usage", "Usage"),
        can.manageTokens() ? link("#/tokens", "tokens", "Tokens") : null,
      ),
      h(
        "div",
        { class: "who" },
        h("span", { class: "workspace", title: `workspace ${token.workspace}` }, token.workspace),
        h("span", { class: `badge role-${token.role}`, title: `${token.role} token, ${scope}` }, token.role),
        h("button", { class: "ghost", type: "button", onclick: signOut }, "Sign out"),
      ),
    ),
    main,
  );
}

const NUMERIC = new Set(["Records", "Size"]);

// A table of `rows` under its column names (null: the unnamed actions column).
function dataTable(kind, columns, rows) {
  const th = (name) =>
    name === null ? h("th", {}, h("span", { class: "sr" }, "Actions")) : h("th", { scope: "col", class: NUMERIC.has(name) ? "num" : null }, name);
  return h("div", { class: "table-wrap" }, h("table", { class: `data ${kind}` }, h("thead", {}, h("tr", {}, columns.map(th))), h("tbody", {}, rows)));
}

function pageHead(title, subtitle, ...actions) {
  return h(
    "div",
    { class: "page-head" },
    h("div", {}, title instanceof Node ? title : h("h1", {}, title), subtitle ? h("p", { class: "sub" }, subtitle) : null),
    h("div", { class: "actions" }, actions),
  );
}

function meter(used, total, label) {
  const share = total > 0 ? used / total : 0;
  const percent = Math.min(100, share * 100);
  const level = share >= 0.9 ? "high" : share >= 0.7 ? "mid" : "low";
  const bar = h("span", { class: "bar " + level });
  bar.style.width = `${percent < 0.5 && used > 0 ? 0.5 : percent}%`;
  return h(
    "span",
    {
      class: "meter",
      role: "meter",
      "aria-valuemin": 0,
      "aria-valuemax": total,
      "aria-valuenow": used,
      "aria-label": label,
      title: `${fmtBytes(used)} of ${fmtBytes(total)} (${percent.toFixed(1)}%)`,
    },
    bar,
  );
}

function usageCard(usage) {
  return h(
    "section",
    { class: "card usage", "aria-label": "Workspace usage" },
    h(
      "div",
      { class: "usage-line" },
      h("strong", {}, "Workspace usage"),
      h(
        "span",
        { class: "usage-numbers" },
        `${fmtBytes(usage.bytes)} of ${fmtBytes(usage.quota_bytes)} (${percentOf(usage.bytes, usage.quota_bytes)}%) · ${fmtInt(usage.records)} records · ${fmtInt(usage.stores.length)} stores`,
      ),
    ),
    meter(usage.bytes, usage.quota_bytes, "Workspace usage against quota"),
  );
}

// --- sign in and out ---------------------------------------------------------------------

function signInView() {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "rs_…",
    required: true,
    autofocus: true,
  });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const button = h("button", { class: "primary wide", type: "submit" }, "Sign in");
  const form = h(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title" },
    h("div", { class: "brand big" }, h("img", { src: "/dashboard/icon.svg", alt: "" }), "runstate"),
    h("h1", { id: "signin-title" }, "Sign in"),
    h("p", { class: "sub" }, "Manage your data stores with an API token."),
    field("Token", input, "The admin token that `runstate serve` printed on its first start, or one from `runstate token create`."),
    error,
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    error.hidden = true;
    try {
      session = null;
      const fresh = await refreshSession(); // a fresh sign-in CSRF token (the last may be old)
      if (fresh.signed_in) return render(); // signed in meanwhile, in another tab
      const info = await fetch("/dashboard/session", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": fresh.csrf },
        body: JSON.stringify({ token: input.value }),
        credentials: "same-origin",
      });
      const data = await info.json();
      if (!info.ok) throw new ApiError(info.status, data.error);
      session = data;
      if (!location.hash.startsWith("#/")) location.hash = "#/stores";
      await render();
    } catch (err) {
      error.textContent = err.status === 401 ? "That token is not valid (unknown or revoked)." : err instanceof ApiError ? err.message : "The server cannot be reached.";
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.select();
      button.disabled = false;
    }
  });
  app.replaceChildren(h("div", { class: "signin-page" }, form));
  input.focus();
}

async function signOut() {
  try {
    await api("DELETE", "/dashboard/session");
  } catch {}
  session = null;
  location.hash = "";
  await start();
  toast("Signed out.");
}

// --- stores --------------------------------------------------------------------------------

function dependentsNote(info) {
  return info.dependents.length ? `Used by ${info.dependents.join(", ")}` : "";
}

function deleteStoreButton(info, after) {
  if (!can.write()) return null;
  if (info.dependents.length) {
    const noteId = `dep-${Math.random().toString(36).slice(2)}`;
    return h(
      "span",
      { class: "blocked" },
      h(
        "button",
        { class: "danger-outline", type: "button", disabled: true, "aria-describedby": noteId, title: `Cannot delete: ${dependentsNote(info)}` },
        "Delete",
      ),
      h("span", { class: "note", id: noteId }, `In use by ${info.dependents.join(", ")}`),
    );
  }
  return h(
    "button",
    {
      class: "danger-outline",
      type: "button",
      "aria-label": `Delete store ${info.name}`,
      onclick: () =>
        confirmDialog({
          title: `Delete store “${info.name}”?`,
          message: [
            h("p", {}, "This deletes the data store ", h("strong", {}, info.name), ` and its ${fmtInt(info.records)} records (${fmtBytes(info.bytes)}).`),
            h("p", {}, "This cannot be undone."),
          ],
          action: `Delete ${info.name}`,
          run: async () => {
            await api("DELETE", `/v1/stores/${enc(info.name)}`);
            toast(`Deleted store ${info.name}.`);
            after();
          },
        }),
    },
    "Delete",
  );
}

function createStoreDialog() {
  openDialog("New data store", (close) => {
    const name = h("input", { name: "name", required: true, maxlength: 128, autocomplete: "off", spellcheck: "false", autofocus: true, placeholder: "orders" });
    const ttl = h("input", { name: "default_ttl", type: "number", min: "1", step: "any", inputmode: "numeric", placeholder: "none" });
    const error = h("p", { class: "error", role: "alert", hidden: true });
    const limited = session.token.stores;
    const form = h(
      "form",
      {},
      field("Name", name, limited ? `This token may use only: ${limited.join(", ")}.` : "1–128 characters: letters, digits, _ . : -"),
      field("Default TTL (seconds)", ttl, "Records written without a ttl expire after this long. Leave empty for no expiry."),
      error,
      h("div", { class: "actions" }, h("button", { type: "button", onclick: close }, "Cancel"), h("button", { class: "primary", type: "submit" }, "Create store")),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      if (!STORE_NAME.test(name.value)) {
        error.textContent = "A store name is 1–128 characters of letters, digits and _ . : -";
        error.hidden = false;
        name.focus();
        return;
      }
      const body = { name: name.value };
      if (ttl.value) body.default_ttl = Number(ttl.value);
      try {
        await api("POST", "/v1/stores", body);
        close();
        toast(`Created store ${name.value}.`);
        location.hash = `#/stores/${encodeURIComponent(name.value)}`;
      } catch (err) {
        error.textContent = err.code === "conflict" ? `A store named “${name.value}” already exists.` : err.message;
        error.hidden = false;
      }
    });
    return form;
  });
}

async function storesView() {
  const usage = await api("GET", "/v1/usage");
  const rerender = () => render();
  const filter = h("input", { type: "search", class: "search", placeholder: "Filter stores", "aria-label": "Filter stores by name", "data-shortcut": "/" });
  const rows = usage.stores.map((info) =>
    h(
      "tr",
      { "data-store": info.name },
      h("td", { "data-label": "Name" }, h("a", { class: "store-link", href: `#/stores/${encodeURIComponent(info.name)}` }, info.name)),
      h("td", { "data-label": "Records", class: "num" }, fmtInt(info.records)),
      h("td", { "data-label": "Size", class: "num" }, fmtBytes(info.bytes)),
      h("td", { "data-label": "Share of quota", class: "meter-cell" }, meter(info.bytes, usage.quota_bytes, `${info.name} usage against quota`)),
      h("td", { "data-label": "Dependents", class: "deps" }, info.dependents.length ? info.dependents.map((d) => h("span", { class: "chip" }, d)) : h("span", { class: "muted" }, "none")),
      h("td", { "data-label": "Default TTL" }, info.default_ttl ? fmtDuration(info.default_ttl) : h("span", { class: "muted" }, "none")),
      h("td", { "data-label": "Created" }, timeEl(info.created_at)),
      h("td", { class: "row-actions" }, deleteStoreButton(info, rerender)),
    ),
  );
  filter.addEventListener("input", () => {
    const wanted = filter.value.toLowerCase();
    for (const row of rows) row.hidden = !row.dataset.store.toLowerCase().includes(wanted);
  });
  const table = usage.stores.length
    ? dataTable("stores", ["Name", "Records", "Size", "Share of quota", "Dependents", "Default TTL", "Created", null], rows)
    : h("div", { class: "empty card" }, h("h2", {}, "No data stores yet"), h("p", {}, "A store is created by the first write to it, or here."), can.write() ? h("button", { class: "primary", type: "button", onclick: createStoreDialog }, "Create a store") : null);
  return shell(
    "stores",
    pageHead("Data stores", `Workspace ${session.token.workspace}`, can.write() ? h("button", { class: "primary", type: "button", onclick: createStoreDialog }, "New store") : null),
    usageCard(usage),
    usage.stores.length > 8 ? h("div", { class: "toolbar" }, filter) : null,
    table,
  );
}

// --- records -------------------------------------------------------------------------------

const pager = { store: null, prefix: null, cursors: [null] }; // cursors[i]: the cursor of page i

function expiryControl(store, record) {
  const select = h("select", { name: "expiry" });
  const seconds = h("input", { type: "number", min: "1", step: "any", inputmode: "numeric", "aria-label": "Expire after seconds", placeholder: "seconds", hidden: true });
  const options = [];
  if (record && record.expires_at) options.push(["keep", `Keep (expires ${fmtRelative(record.expires_at)})`]);
  options.push(["none", "Never expires"]);
  if (store.default_ttl) options.push(["default", `Store default (${fmtDuration(store.default_ttl)})`]);
  options.push(["custom", "Expire after…"]);
  for (const [value, label] of options) select.append(h("option", { value }, label));
  select.value = record ? (record.expires_at ? "keep" : "none") : store.default_ttl ? "default" : "none";
  select.addEventListener("change", () => {
    seconds.hidden = select.value !== "custom";
    if (!seconds.hidden) seconds.focus();
  });
  const control = h("div", { class: "expiry" }, select, seconds);
  // The batch ops that give the record this expiry: [ttl for the set, set_ttl null after it].
  control.plan = () => {
    if (select.value === "keep") {
      const left = (Date.parse(record.expires_at) - Date.now()) / 1000;
      return { ttl: Math.max(1, Math.round(left)), clear: false };
    }
    if (select.value === "custom") {
      const value = Number(seconds.value);
      if (!(value > 0)) throw new Error("Give the number of seconds until the record expires.");
      return { ttl: value, clear: false };
    }
    return { ttl: null, clear: select.value === "none" };
  };
  return control;
}

// A record written through one batch: the value is the editor's own text, checked as JSON.
function saveBatch(key, text, version, plan) {
  const k = JSON.stringify(key);
  const ttl = plan.ttl ? `,"ttl":${plan.ttl}` : "";
  const clear = plan.clear ? `,{"op":"set_ttl","key":${k},"ttl":null}` : "";
  return `{"ops":[{"op":"set","key":${k},"value":${text}${ttl},"if_version":${version}}${clear}]}`;
}

function jsonEditor(initial) {
  const area = h("textarea", { class: "code", spellcheck: "false", autocapitalize: "off", autocomplete: "off", rows: 14, "aria-describedby": "json-status" });
  area.value = initial;
  const status = h("p", { id: "json-status", class: "json-status", "aria-live": "polite" });
  const check = () => {
    const problem = area.value.trim() ? jsonError(area.value) : "Enter a JSON value (for a string, use quotes).";
    area.setAttribute("aria-invalid", problem ? "true" : "false");
    status.className = "json-status " + (problem ? "bad" : "good");
    status.textContent = problem ? `Invalid JSON: ${problem}` : "Valid JSON";
    editor.dispatchEvent(new Event("validity"));
    return !problem;
  };
  const format = h("button", { type: "button", class: "ghost small", title: "Format (Ctrl+Shift+F)" }, "Format");
  format.addEventListener("click", () => {
    if (check()) {
      area.value = formatJson(area.value);
      check();
    }
  });
  area.addEventListener("input", check);
  area.addEventListener("keydown", (event) => {
    if (event.key === "F" && event.shiftKey && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      format.click();
    }
  });
  const editor = h("div", { class: "editor" }, h("div", { class: "editor-bar" }, h("span", { class: "muted" }, "JSON"), format), area, status);
  editor.area = area;
  editor.valid = check;
  queueMicrotask(check);
  return editor;
}

function recordDialog(store, record, done) {
  const editing = record !== null;
  const readOnly = !can.write();
  const title = readOnly ? "Record" : editing ? "Edit record" : "Add record";
  openDialog(
    title,
    (close) => {
      const key = h("input", { name: "key", required: true, autocomplete: "off", spellcheck: "false", autofocus: !editing, placeholder: "user:42" });
      const editor = jsonEditor(editing ? formatJson(record.value.raw) : "");
      const expiry = readOnly ? null : expiryControl(store, record);
      const error = h("div", { class: "error", role: "alert", hidden: true });
      const save = h("button", { class: "primary", type: "submit" }, editing ? "Save" : "Add record");
      let version = editing ? record.version : 0;
      editor.addEventListener("validity", () => {
        save.disabled = editor.area.getAttribute("aria-invalid") === "true";
      });
      const meta = editing
        ? h(
            "dl",
            { class: "meta" },
            h("dt", {}, "Key"),
            h("dd", { class: "mono key-name" }, record.key),
            h("dt", {}, "Version"),
            h("dd", { class: "version" }, String(record.version)),
            h("dt", {}, "Updated"),
            h("dd", {}, timeEl(record.updated_at)),
            h("dt", {}, "Expires"),
            h("dd", {}, timeEl(record.expires_at)),
          )
        : field("Key", key);
      if (readOnly) {
        editor.area.readOnly = true;
        return h("div", {}, meta, editor, h("div", { class: "actions" }, h("button", { type: "button", autofocus: true, onclick: close }, "Close")));
      }
      const showError = (...content) => {
        error.replaceChildren(...content);
        error.hidden = false;
      };
      const form = h(
        "form",
        {},
        meta,
        h("div", { class: "field" }, h("label", { for: "value-editor" }, "Value"), editor),
        field("Expiry", expiry),
        error,
        h("div", { class: "actions" }, h("span", { class: "hint kbd" }, "Ctrl+Enter saves"), h("button", { type: "button", onclick: close }, "Cancel"), save),
      );
      editor.area.id = "value-editor";
      if (editing) editor.area.setAttribute("autofocus", ""); // straight to the value
      form.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
          event.preventDefault();
          form.requestSubmit();
        }
      });
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        error.hidden = true;
        if (!editor.valid()) {
          editor.area.focus();
          return; // refused inline; nothing is sent
        }
        const name = editing ? record.key : key.value;
        if (!name) return showError("Give the record a key.");
        let plan;
        try {
          plan = expiry.plan();
        } catch (err) {
          return showError(err.message);
        }
        save.disabled = true;
        try {
          const body = saveBatch(name, editor.area.value.trim(), version, plan);
          await api("POST", `/v1/stores/${enc(store.name)}/batch`, body);
          close();
          toast(editing ? `Saved ${name}.` : `Added ${name}.`);
          done();
        } catch (err) {
          save.disabled = false;
          if (err.code === "conflict" && !editing) {
            showError(`A record with the key “${name}” already exists.`);
          } else if (err.code === "conflict") {
            await reportConflict(store, name, editor, showError, (latest) => {
              version = latest ? latest.version : 0;
              record = latest || record;
            });
          } else {
            showError(err.message);
          }
        }
      });
      return form;
    },
    { wide: true },
  );
}

// The record changed (or went) since the editor opened: say so and save nothing.
async function reportConflict(store, key, editor, showError, adopt) {
  let latest = null;
  try {
    latest = await api("GET", `/v1/stores/${enc(store.name)}/records/${enc(key)}`, undefined, { depth: 1 });
  } catch (err) {
    if (err.code !== "not_found") return showError(err.message);
  }
  const load = h("button", { type: "button", class: "small" }, latest ? "Load the latest value" : "Keep my text to re-create it");
  load.addEventListener("click", () => {
    adopt(latest);
    if (latest) {
      editor.area.value = formatJson(latest.value.raw);
      editor.valid();
      const versionCell = document.querySelector("dialog .version");
      if (versionCell) versionCell.textContent = String(latest.version);
    }
    showError(latest ? `Loaded version ${latest.version}. Your edit was discarded.` : "Save again to re-create the record.");
  });
  const what = latest
    ? `This record was changed elsewhere while you were editing (now version ${latest.version}, updated ${fmtRelative(latest.updated_at)}).`
    : "This record was deleted elsewhere while you were editing.";
  showError(h("strong", {}, "Not saved. "), what, " ", load);
}

function defaultTtlDialog(store, done) {
  openDialog(`Default TTL of “${store.name}”`, (close) => {
    const ttl = h("input", { type: "number", min: "1", step: "any", inputmode: "numeric", placeholder: "none", autofocus: true });
    if (store.default_ttl) ttl.value = String(store.default_ttl);
    const error = h("p", { class: "error", role: "alert", hidden: true });
    const form = h(
      "form",
      {},
      field("Default TTL (seconds)", ttl, "Applies to records written from now on without their own ttl. Empty: no expiry."),
      error,
      h("div", { class: "actions" }, h("button", { type: "button", onclick: close }, "Cancel"), h("button", { class: "primary", type: "submit" }, "Save")),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await api("PATCH", `/v1/stores/${enc(store.name)}`, { default_ttl: ttl.value ? Number(ttl.value) : null });
        close();
        toast(`Default TTL of ${store.name} saved.`);
        done();
      } catch (err) {
        error.textContent = err.message;
        error.hidden = false;
      }
    });
    return form;
  });
}

function deleteRecord(store, record, done) {
  confirmDialog({
    title: `Delete record “${record.key}”?`,
    message: h("p", {}, "This deletes the record ", h("strong", { class: "mono" }, record.key), ` from ${store.name}. This cannot be undone.`),
    action: "Delete record",
    run: async () => {
      try {
        await api("DELETE", `/v1/stores/${enc(store.name)}/records/${enc(record.key)}?if_version=${record.version}`);
      } catch (err) {
        if (err.code === "conflict") throw new Error("The record was changed elsewhere meanwhile; it was not deleted. Reload to see it.");
        if (err.code !== "not_found") throw err;
      }
      toast(`Deleted ${record.key}.`);
      done();
    },
  });
}

function clearStore(store, done) {
  confirmDialog({
    title: `Delete every record of “${store.name}”?`,
    message: h("p", {}, `This deletes all ${fmtInt(store.records)} records of `, h("strong", {}, store.name), ". The store itself stays. This cannot be undone."),
    action: "Delete all records",
    run: async () => {
      const result = await api("DELETE", `/v1/stores/${enc(store.name)}/records`);
      toast(`Deleted ${fmtInt(result.deleted)} records.`);
      done();
    },
  });
}

function parseRoute() {
  const [path, query = ""] = location.hash.slice(1).split("?");
  let parts;
  try {
    parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  } catch {
    parts = []; // a malformed address: the stores page
  }
  return { parts, params: new URLSearchParams(query) };
}

async function storeView(name, params) {
  const prefix = params.get("prefix") || "";
  if (pager.store !== name || pager.prefix !== prefix) Object.assign(pager, { store: name, prefix, cursors: [null], page: 0 });
  const page = pager.page || 0;
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (prefix) query.set("prefix", prefix);
  if (pager.cursors[page]) query.set("cursor", pager.cursors[page]);
  const base = `/v1/stores/${enc(name)}`;
  const [store, usage, listing] = await Promise.all([
    api("GET", base).catch((err) => {
      if (err.code === "not_found") return { name, records: 0, bytes: 0, dependents: [], default_ttl: null, created_at: null, missing: true };
      throw err;
    }),
    api("GET", "/v1/usage"),
    api("GET", `${base}/records?${query}`, undefined, { depth: 3 }),
  ]);
  pager.cursors[page + 1] = listing.next_cursor;
  const reload = () => render();
  const writes = can.write();

  const filter = h("input", { type: "search", class: "search", value: prefix, placeholder: "Filter by key prefix", "aria-label": "Filter by key prefix", "data-shortcut": "/", spellcheck: "false" });
  let timer = 0;
  filter.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const value = filter.value;
      location.hash = `#/stores/${encodeURIComponent(name)}` + (value ? `?prefix=${encodeURIComponent(value)}` : "");
    }, 250);
  });

  const rows = listing.records.map((record) =>
    h(
      "tr",
      { "data-key": record.key },
      h("td", { "data-label": "Key", class: "key mono" }, record.key),
      h("td", { "data-label": "Value", class: "value" }, jsonView(record.value.raw)),
      h("td", { "data-label": "Expires", class: "when" }, record.expires_at ? timeEl(record.expires_at) : h("span", { class: "muted" }, "never")),
      h("td", { "data-label": "Updated", class: "when" }, timeEl(record.updated_at), h("span", { class: "muted ver" }, ` v${record.version}`)),
      h(
        "td",
        { class: "row-actions" },
        h("button", { type: "button", class: "small", "aria-label": `${writes ? "Edit" : "View"} ${record.key}`, onclick: () => recordDialog(store, record, reload) }, writes ? "Edit" : "View"),
        writes ? h("button", { type: "button", class: "small danger-outline", "aria-label": `Delete ${record.key}`, onclick: () => deleteRecord(store, record, reload) }, "Delete") : null,
      ),
    ),
  );
  const first = page * PAGE_SIZE + 1;
  const range = listing.records.length ? `${fmtInt(first)}–${fmtInt(first + listing.records.length - 1)}` : "0";
  const go = (delta) => {
    pager.page = page + delta;
    render();
  };
  const nav = h(
    "div",
    { class: "pager" },
    h("span", { class: "muted range" }, `Records ${range}${prefix ? "" : ` of ${fmtInt(store.records)}`}`),
    h("button", { type: "button", class: "small", disabled: page === 0, onclick: () => go(-1) }, "← Previous"),
    h("button", { type: "button", class: "small", disabled: !listing.next_cursor, onclick: () => go(1) }, "Next →"),
  );
  const table = listing.records.length
    ? dataTable("records", ["Key", "Value", "Expires", "Updated", null], rows)
    : h("div", { class: "empty card" }, h("h2", {}, prefix ? `No keys start with “${prefix}”` : "No records yet"), writes ? h("button", { class: "primary", type: "button", onclick: () => recordDialog(store, null, reload) }, "Add a record") : null);

  const facts = h(
    "dl",
    { class: "facts card" },
    h("div", {}, h("dt", {}, "Records"), h("dd", {}, fmtInt(store.records))),
    h("div", {}, h("dt", {}, "Size"), h("dd", {}, fmtBytes(store.bytes), " ", meter(store.bytes, usage.quota_bytes, `${name} usage against quota`), h("span", { class: "muted" }, ` ${percentOf(store.bytes, usage.quota_bytes)}% of quota`))),
    h(
      "div",
      {},
      h("dt", {}, "Default TTL"),
      h(
        "dd",
        {},
        store.default_ttl ? fmtDuration(store.default_ttl) : "none",
        writes && !store.missing ? h("button", { type: "button", class: "link change", "aria-label": "Change the default TTL", onclick: () => defaultTtlDialog(store, reload) }, "Change") : null,
      ),
    ),
    h("div", {}, h("dt", {}, "Dependents"), h("dd", {}, store.dependents.length ? store.dependents.map((d) => h("span", { class: "chip" }, d)) : "none")),
    h("div", {}, h("dt", {}, "Created"), h("dd", {}, timeEl(store.created_at))),
  );
  const title = h("div", {}, h("p", { class: "crumbs" }, h("a", { href: "#/stores" }, "Data stores"), " / "), h("h1", { class: "mono" }, name));
  return shell(
    "stores",
    pageHead(
      title,
      store.missing ? "This store does not exist yet: the first record written creates it." : null,
      writes ? h("button", { class: "primary", type: "button", onclick: () => recordDialog(store, null, reload) }, "Add record") : null,
      h("a", { class: "button", href: `${base}/export`, download: `${name}.ndjson` }, "Export"),
      writes && store.records ? h("button", { type: "button", class: "danger-outline", onclick: () => clearStore(store, reload) }, "Clear") : null,
      store.missing ? null : deleteStoreButton(store, () => (location.hash = "#/stores")),
    ),
    facts,
    h("div", { class: "toolbar" }, filter, nav),
    table,
    listing.records.length > 10 ? h("div", { class: "toolbar end" }, nav.cloneNode(true)) : null,
  );
}

// --- usage -----------------------------------------------------------------------------------

async function usageView() {
  const usage = await api("GET", "/v1/usage");
  const stores = [...usage.stores].sort((a, b) => b.bytes - a.bytes);
  return shell(
    "usage",
    pageHead("Usage", "Bytes of keys and values against the workspace quota. Deleting is always allowed."),
    usageCard(usage),
    dataTable(
      "usage-table",
      ["Store", "Records", "Size", "Share of quota"],
      stores.map((info) =>
        h(
          "tr",
          {},
          h("td", { "data-label": "Store" }, h("a", { href: `#/stores/${encodeURIComponent(info.name)}` }, info.name)),
          h("td", { "data-label": "Records", class: "num" }, fmtInt(info.records)),
          h("td", { "data-label": "Size", class: "num" }, fmtBytes(info.bytes)),
          h("td", { "data-label": "Share of quota", class: "meter-cell wide" }, meter(info.bytes, usage.quota_bytes, `${info.name} usage against quota`), h("span", { class: "muted" }, ` ${percentOf(info.bytes, usage.quota_bytes)}%`)),
        ),
      ),
    ),
  );
}

// --- tokens ------------------------------------------------------------------------------------

function newTokenDialog(done) {
  openDialog("New token", (close) => {
    const role = h("select", { name: "role" }, h("option", { value: "read" }, "read: reads only"), h("option", { value: "write" }, "write: records and stores"), h("option", { value: "admin" }, "admin: everything, tokens included"));
    const stores = h("input", { name: "stores", placeholder: "all stores", autocomplete: "off", spellcheck: "false" });
    const error = h("p", { class: "error", role: "alert", hidden: true });
    const form = h(
      "form",
      {},
      field("Role", role),
      field("Limit to stores", stores, "Comma-separated store names; empty for every store."),
      error,
      h("div", { class: "actions" }, h("button", { type: "button", onclick: close }, "Cancel"), h("button", { class: "primary", type: "submit" }, "Create token")),
    );
    role.setAttribute("autofocus", "");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const names = stores.value.split(",").map((s) => s.trim()).filter(Boolean);
      try {
        const created = await api("POST", "/v1/tokens", { role: role.value, stores: names.length ? names : null });
        close();
        showToken(created);
        done();
      } catch (err) {
        error.textContent = err.message;
        error.hidden = false;
      }
    });
    return form;
  });
}

function showToken(created) {
  openDialog("Copy your new token", (close) => {
    const value = h("input", { class: "mono secret", readonly: true, value: created.token, "aria-label": "New token", autofocus: true });
    const copy = h("button", { type: "button", class: "primary" }, "Copy");
    copy.addEventListener("click", async () => {
      value.select();
      try {
        await navigator.clipboard.writeText(created.token);
      } catch {
        document.execCommand("copy");
      }
      copy.textContent = "Copied";
    });
    value.addEventListener("focus", () => value.select());
    return h(
      "div",
      {},
      h("p", {}, `A ${created.role} token (${created.id}) for `, created.stores ? `the stores ${created.stores.join(", ")}` : "every store", ". ", h("strong", {}, "It is shown only now"), ": store it somewhere safe."),
      h("div", { class: "copy-row" }, value, copy),
      h("div", { class: "actions" }, h("button", { type: "button", onclick: close }, "Done")),
    );
  });
}

async function tokensView() {
  const { tokens } = await api("GET", "/v1/tokens");
  const reload = () => render();
  const rows = tokens.map((token) => {
    const own = token.id === session.token.id;
    return h(
      "tr",
      { "data-token": token.id },
      h("td", { "data-label": "Id", class: "mono" }, token.id, own ? h("span", { class: "chip you" }, "this session") : null),
      h("td", { "data-label": "Role" }, h("span", { class: `badge role-${token.role}` }, token.role)),
      h("td", { "data-label": "Stores" }, token.stores ? token.stores.map((s) => h("span", { class: "chip" }, s)) : h("span", { class: "muted" }, "all")),
      h("td", { "data-label": "Created" }, timeEl(token.created_at)),
      h(
        "td",
        { class: "row-actions" },
        h(
          "button",
          {
            type: "button",
            class: "small danger-outline",
            "aria-label": `Revoke ${token.id}`,
            onclick: () =>
              confirmDialog({
                title: `Revoke token ${token.id}?`,
                message: h("p", {}, `Every client using this ${token.role} token loses access at once.`, own ? h("strong", {}, " You signed in with it: you will be signed out.") : null),
                action: "Revoke token",
                run: async () => {
                  await api("DELETE", `/v1/tokens/${enc(token.id)}`);
                  toast(`Revoked ${token.id}.`);
                  if (own) {
                    session = null;
                    await start();
                  } else reload();
                },
              }),
          },
          "Revoke",
        ),
      ),
    );
  });
  return shell(
    "tokens",
    pageHead("Tokens", `API tokens of workspace ${session.token.workspace}. A token is shown once, when it is created; only its hash is kept.`, h("button", { class: "primary", type: "button", onclick: () => newTokenDialog(reload) }, "New token")),
    dataTable("tokens", ["Id", "Role", "Stores", "Created", null], rows),
  );
}

// --- routing -------------------------------------------------------------------------------------

async function render() {
  const seq = ++renderSeq;
  if (!session) return start();
  const { parts, params } = parseRoute();
  let view;
  try {
    if (parts[0] === "stores" && parts[1]) view = await storeView(parts[1], params);
    else if (parts[0] === "usage") view = await usageView();
    else if (parts[0] === "tokens" && can.manageTokens()) view = await tokensView();
    else view = await storesView();
  } catch (err) {
    if (!session) return;
    view = shell("", h("div", { class: "card error-page" }, h("h1", {}, "Something went wrong"), h("p", { class: "error" }, err.message), h("button", { type: "button", onclick: () => render() }, "Try again")));
  }
  if (seq !== renderSeq) return; // a later navigation won
  // Keep the keyboard's place: the filter being typed in, or the button that was used (by its
  // label: "Edit user:1"), in the new view.
  const active = document.activeElement;
  const typing = active && active.dataset && active.dataset.shortcut ? active.selectionStart : null;
  const label = active && active !== document.body ? active.getAttribute("aria-label") : null;
  app.replaceChildren(view);
  if (typing !== null) {
    const search = app.querySelector("[data-shortcut]");
    if (search) {
      search.focus();
      search.setSelectionRange(typing, typing);
    }
  } else if (label) {
    const again = [...app.querySelectorAll("[aria-label]")].find((el) => el.getAttribute("aria-label") === label);
    if (again) again.focus();
  }
}

async function start() {
  let info;
  try {
    info = await refreshSession();
  } catch (err) {
    app.replaceChildren(h("div", { class: "signin-page" }, h("div", { class: "card" }, h("h1", {}, "runstate is not answering"), h("p", { class: "error" }, err.message))));
    return;
  }
  if (!info.signed_in) return signInView();
  await render();
}

window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#/") || location.hash === "") {
    const { parts } = parseRoute();
    if (parts[0] !== "stores" || !parts[1]) pager.store = null;
    render().then(() => {
      const main = document.getElementById("main");
      if (main && !document.querySelector("[data-shortcut]:focus")) main.focus({ preventScroll: true });
    });
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target.closest("input, textarea, select, dialog")) return;
  const search = app.querySelector("[data-shortcut]");
  if (search) {
    event.preventDefault();
    search.focus();
  }
});

document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  const main = document.getElementById("main");
  if (main) main.focus();
});

start();
