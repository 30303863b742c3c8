// The catalog: categories, filters, search as you type, keyset paging ("Show more" follows
// nextPageToken; nothing counts pages or offsets). The filters live in the hash's query, so a
// reload or a shared link shows the same list.

import * as api from "../api.js";
import { describeError } from "../http.js";
import { clear, debounce, formatPrice, h } from "../dom.js";

const PAGE_SIZE = 20;
const TYPING_PAUSE_MS = 250;
const ORDERS = [
  ["", "Relevance / newest"],
  ["-createdAt", "Newest first"],
  ["createdAt", "Oldest first"],
  ["price", "Price: low to high"],
  ["-price", "Price: high to low"],
];

function stateFrom(query) {
  return {
    q: query.q || "",
    category: query.category || "",
    min: query.min || "",
    max: query.max || "",
    inStock: query.inStock === "true",
    orderBy: query.orderBy || "",
  };
}

function cents(euros) {
  if (euros === "") return undefined;
  const value = Number(euros);
  return Number.isFinite(value) && value >= 0 ? Math.round(value * 100) : NaN;
}

export function productCard(p) {
  const stock = Number(p.stock || 0);
  return h(
    "li",
    { class: "card product-card" },
    h("h3", {}, h("a", { href: `#/products/${encodeURIComponent(p.id)}` }, p.name)),
    h("p", { class: "price" }, formatPrice(p.priceCents, p.currency)),
    h("p", { class: "muted" }, p.category),
    h("p", { class: stock > 0 ? "stock in-stock" : "stock out-of-stock" }, stock > 0 ? `In stock (${stock})` : "Out of stock"),
  );
}

export function catalogView(container, ctx) {
  document.title = "Catalog · the mesh";
  let state = stateFrom(ctx.query);
  let nextPageToken = "";
  let inflight = null; // AbortController of the list request in flight
  let shown = 0;

  const categoryList = h("ul", { class: "category-list" });
  const search = h("input", {
    id: "search", name: "q", type: "search", autocomplete: "off", placeholder: "kettle, headphones, atlas…",
    "aria-controls": "results", maxlength: "200",
  });
  const min = h("input", { id: "min", name: "min", type: "number", min: "0", step: "0.01", inputmode: "decimal" });
  const max = h("input", { id: "max", name: "max", type: "number", min: "0", step: "0.01", inputmode: "decimal" });
  const inStock = h("input", { id: "inStock", name: "inStock", type: "checkbox" });
  const order = h("select", { id: "orderBy", name: "orderBy" }, ORDERS.map(([value, label]) => h("option", { value }, label)));
  const status = h("p", { class: "result-status", role: "status", "aria-live": "polite" });
  const alert = h("p", { class: "form-alert", role: "alert", hidden: true });
  const results = h("ul", { id: "results", class: "product-grid", "aria-label": "Products", "aria-busy": "false" });
  const more = h("button", { type: "button", class: "button button-secondary", hidden: true }, "Show more");

  const filters = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Product search and filters" },
    h("div", { class: "field field-wide" }, h("label", { for: "search" }, "Search products"), search),
    h("div", { class: "field" }, h("label", { for: "min" }, "Min price (€)"), min),
    h("div", { class: "field" }, h("label", { for: "max" }, "Max price (€)"), max),
    h("div", { class: "field" }, h("label", { for: "orderBy" }, "Sort by"), order),
    h("div", { class: "field field-check" }, inStock, h("label", { for: "inStock" }, "In stock only")),
  );
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    readFilters();
  });

  container.append(
    h(
      "section",
      { class: "catalog" },
      h("h1", {}, "Catalog"),
      h(
        "div",
        { class: "catalog-layout" },
        h("nav", { class: "categories", "aria-labelledby": "categories-heading" }, h("h2", { id: "categories-heading" }, "Categories"), categoryList),
        h("div", { class: "catalog-main" }, filters, status, alert, results, more),
      ),
    ),
  );

  const typed = debounce(() => readFilters(), TYPING_PAUSE_MS);
  search.addEventListener("input", typed);
  for (const input of [min, max, inStock, order]) input.addEventListener("change", () => readFilters());
  more.addEventListener("click", () => load(false));

  syncInputs();
  loadCategories();
  load(true);

  function syncInputs() {
    if (document.activeElement !== search) search.value = state.q;
    min.value = state.min;
    max.value = state.max;
    inStock.checked = state.inStock;
    order.value = state.orderBy;
  }

  function readFilters() {
    typed.cancel(); // this reads the search box too: a pending search-as-you-type is covered
    const next = {
      ...state,
      q: search.value.trim(),
      min: min.value,
      max: max.value,
      inStock: inStock.checked,
      orderBy: order.value,
    };
    if (JSON.stringify(next) === JSON.stringify(state)) return; // nothing changed: keep the list
    state = next;
    ctx.replaceQuery(state);
    renderCategories();
    load(true);
  }

  let categories = [];
  async function loadCategories() {
    try {
      categories = await api.categories();
    } catch (error) {
      categories = [];
      categoryList.replaceChildren(h("li", { class: "muted" }, describeError(error)));
      return;
    }
    renderCategories();
  }

  function renderCategories() {
    if (!categories.length) return;
    const link = (name, label, count) => {
      const href = `#/?${new URLSearchParams(Object.entries({ ...state, category: name, inStock: state.inStock || "" }).filter(([, v]) => v)).toString()}`;
      return h(
        "li",
        {},
        h("a", { href, "aria-current": (state.category || "") === name ? "page" : false }, label, count !== undefined ? h("span", { class: "count" }, ` ${count}`) : null),
      );
    };
    const total = categories.reduce((sum, c) => sum + Number(c.productCount || 0), 0);
    categoryList.replaceChildren(link("", "All", total), ...categories.map((c) => link(c.name, c.name, c.productCount)));
  }

  async function load(reset) {
    inflight?.abort();
    const controller = new AbortController();
    inflight = controller;
    alert.hidden = true;
    const minCents = cents(state.min);
    const maxCents = cents(state.max);
    if (Number.isNaN(minCents) || Number.isNaN(maxCents)) {
      alert.textContent = "Prices are amounts in euros, 0 or more.";
      alert.hidden = false;
      return;
    }
    if (reset) nextPageToken = "";
    results.setAttribute("aria-busy", "true");
    more.disabled = true;
    status.textContent = reset ? "Searching…" : "Loading more…";
    try {
      const page = await api.products(
        {
          q: state.q,
          category: state.category,
          minPriceCents: minCents,
          maxPriceCents: maxCents,
          inStock: state.inStock ? "true" : undefined,
          orderBy: state.orderBy === "" ? undefined : state.orderBy,
          pageSize: PAGE_SIZE,
          pageToken: reset ? undefined : nextPageToken,
        },
        controller.signal,
      );
      if (controller !== inflight) return;
      if (reset) {
        clear(results);
        shown = 0;
      }
      const items = page.products || [];
      results.append(...items.map(productCard));
      shown += items.length;
      nextPageToken = page.nextPageToken || "";
      more.hidden = !nextPageToken;
      const what = state.q ? ` for “${state.q}”` : "";
      const where = state.category ? ` in ${state.category}` : "";
      status.textContent = shown
        ? `Showing ${shown} product${shown === 1 ? "" : "s"}${what}${where}${nextPageToken ? "" : " (all)"}.`
        : `No products${what}${where}.`;
    } catch (error) {
      if (error?.name === "AbortError" || controller !== inflight) return;
      status.textContent = "";
      alert.textContent = describeError(error);
      alert.hidden = false;
    } finally {
      if (controller === inflight) {
        results.setAttribute("aria-busy", "false");
        more.disabled = false;
      }
    }
  }

  return {
    update(next) {
      state = stateFrom(next.query);
      syncInputs();
      renderCategories();
      load(true);
    },
    unmount() {
      inflight?.abort();
      typed.cancel();
    },
  };
}
