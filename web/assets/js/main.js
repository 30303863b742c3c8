// The console's shell: the hash router, the account area and the notice line.
//
// Routes (the hash keeps the server's routes out of the way and works from any path):
//   #/                    the catalog (filters in the query: ?q=&category=&min=&max=&inStock=&orderBy=)
//   #/products/<id>       a product, with reservations
//   #/signin, #/signup    accounts (?next=<hash to return to>)
//   #/chat, #/chat/<room> rooms and a room's live messages

import { clear, h } from "./dom.js";
import { currentUser, onSessionChange, signOut } from "./session.js";
import { catalogView } from "./views/catalog.js";
import { productView } from "./views/product.js";
import { signInView, signUpView } from "./views/auth.js";
import { chatView } from "./views/chat.js";

const ROUTES = [
  { pattern: /^\/?$/, view: catalogView, nav: "catalog" },
  { pattern: /^\/products\/([^/]+)$/, view: productView, nav: "catalog", keys: ["id"] },
  { pattern: /^\/signin$/, view: signInView },
  { pattern: /^\/signup$/, view: signUpView },
  { pattern: /^\/chat(?:\/([^/]+))?$/, view: chatView, nav: "chat", keys: ["room"] },
];

const main = document.getElementById("view");
const account = document.getElementById("account");
const notice = document.getElementById("notice");
let current = null; // {route, instance}

export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?");
  return { path, query: Object.fromEntries(new URLSearchParams(search)) };
}

export function hashFor(path, query = {}) {
  const search = new URLSearchParams(
    Object.entries(query).filter(([, v]) => v !== undefined && v !== null && v !== "" && v !== false),
  ).toString();
  return `#${path}${search ? `?${search}` : ""}`;
}

export function navigate(path, query) {
  location.hash = hashFor(path, query);
}

/** Change the query of the current hash without a new history entry or a re-render. */
export function replaceQuery(query) {
  const { path } = parseHash();
  history.replaceState(history.state, "", hashFor(path, query));
}

export function showNotice(text, kind = "info") {
  notice.textContent = text;
  notice.className = `notice notice-${kind}`;
  notice.hidden = !text;
}

function render({ force = false } = {}) {
  const { path, query } = parseHash();
  let route = null;
  let params = {};
  for (const candidate of ROUTES) {
    const match = candidate.pattern.exec(path);
    if (match) {
      route = candidate;
      params = Object.fromEntries((candidate.keys || []).map((k, i) => [k, match[i + 1] && decodeURIComponent(match[i + 1])]));
      break;
    }
  }
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (route?.nav === link.dataset.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const ctx = { params, query, navigate, replaceQuery, showNotice };
  if (!force && current && route && current.route === route && current.instance.update) {
    current.instance.update(ctx);
    return;
  }
  current?.instance.unmount?.();
  clear(main);
  if (!route) {
    document.title = "Not found · the mesh";
    main.append(h("h1", { tabindex: "-1" }, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the catalog")));
    current = null;
    focusHeading();
    return;
  }
  current = { route, instance: route.view(main, ctx) || {} };
  focusHeading();
}

function focusHeading() {
  // Move focus to the new page's heading (screen readers announce it), except on first load.
  if (!render.started) {
    render.started = true;
    return;
  }
  const heading = main.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: false });
  }
}

function renderAccount() {
  clear(account);
  const user = currentUser();
  if (user) {
    account.append(
      h("span", { class: "whoami" }, "Signed in as ", h("strong", {}, user.displayName || user.email)),
      h("button", { type: "button", class: "link-button", onclick: () => signOut() }, "Sign out"),
    );
  } else {
    const next = location.hash && !/^#\/sign(in|up)/.test(location.hash) ? location.hash : undefined;
    account.append(
      h("a", { href: hashFor("/signin", { next }) }, "Sign in"),
      h("a", { href: hashFor("/signup", { next }), class: "button button-small" }, "Sign up"),
    );
  }
}

onSessionChange((user, reason) => {
  renderAccount();
  if (reason === "expired") showNotice("Your session has ended. Please sign in again.", "warning");
  else if (reason === "signed-out") showNotice("You are signed out.");
  else showNotice("");
  if (!user) render({ force: true }); // views that need an account show their sign-in prompt
});

window.addEventListener("hashchange", () => {
  showNotice("");
  renderAccount();
  render();
});

renderAccount();
render();
