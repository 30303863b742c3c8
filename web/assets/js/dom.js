// Small DOM helpers. Every text goes in as a text node (never innerHTML), so what a user or
// the API wrote can never become markup.

/**
 * Create an element: h("a", {href: "#/", class: "x", onclick: fn}, "text", child, [more]).
 * Attributes named on* become listeners; `true` sets a boolean attribute, false/null skips it.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/** A random id for idempotency keys and chat clientMsgIds (crypto.randomUUID needs a secure
 *  context; getRandomValues works on any origin). */
export function newId() {
  if (globalThis.crypto?.randomUUID && globalThis.isSecureContext) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const priceFormats = new Map();

export function formatPrice(cents, currency = "EUR") {
  let format = priceFormats.get(currency);
  if (!format) {
    try {
      format = new Intl.NumberFormat(undefined, { style: "currency", currency });
    } catch {
      format = { format: (v) => `${v.toFixed(2)} ${currency}` };
    }
    priceFormats.set(currency, format);
  }
  return format.format(Number(cents) / 100);
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const today = new Date().toDateString() === date.toDateString();
  return today ? timeFormat.format(date) : dateTimeFormat.format(date);
}

/** Call fn at most once per `ms` of quiet: the last call wins. */
export function debounce(fn, ms) {
  let timer = null;
  const debounced = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  debounced.cancel = () => clearTimeout(timer);
  return debounced;
}

/** A labelled form field: returns {field, input, error} (the error element is where a field's
 *  validation message goes, tied to the input with aria-describedby). */
export function field(label, inputAttrs) {
  const id = inputAttrs.id || `f-${inputAttrs.name}`;
  const errorId = `${id}-error`;
  const input = h(inputAttrs.tag || "input", { ...inputAttrs, tag: null, id, "aria-describedby": errorId });
  const error = h("p", { class: "field-error", id: errorId, hidden: true });
  const wrapper = h("div", { class: "field" }, h("label", { for: id }, label), input, error);
  return { field: wrapper, input, error };
}

/** Show per-field problems (`errors: [{field, message}]`) next to their inputs; returns the
 *  problems no input claimed. */
export function showFieldErrors(fields, problems) {
  for (const f of Object.values(fields)) {
    f.error.hidden = true;
    f.error.textContent = "";
    f.input.removeAttribute("aria-invalid");
  }
  const unclaimed = [];
  for (const problem of problems || []) {
    const f = fields[problem.field];
    if (f) {
      f.error.textContent = problem.message;
      f.error.hidden = false;
      f.input.setAttribute("aria-invalid", "true");
    } else {
      unclaimed.push(problem);
    }
  }
  const first = Object.values(fields).find((f) => f.input.getAttribute("aria-invalid"));
  first?.input.focus();
  return unclaimed;
}
