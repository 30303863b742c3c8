// One product, and reserving some of it. Every reservation attempt has its own idempotency
// key (kept while that attempt is retried after a network failure, so a retry can never
// reserve twice). Errors say what to do: out of stock shows how many are left; a rate limit
// shows the wait (from Retry-After) counting down, with the button disabled until then.

import * as api from "../api.js";
import { ApiError, NetworkError, describeError } from "../http.js";
import { formatPrice, h, newId } from "../dom.js";
import { signedIn } from "../session.js";

export function productView(container, ctx) {
  const id = ctx.params.id;
  let product = null;
  let countdown = null;
  const controller = new AbortController();
  const section = h("section", { class: "product" }, h("p", { class: "muted" }, "Loading…"));
  container.append(h("p", { class: "breadcrumb" }, h("a", { href: "#/" }, "← Catalog")), section);
  document.title = "Product · the mesh";
  load();

  async function load() {
    try {
      product = await api.product(id, controller.signal);
    } catch (error) {
      if (error?.name === "AbortError") return;
      section.replaceChildren(
        h("h1", {}, error instanceof ApiError && error.status === 404 ? "Product not found" : "This product cannot be shown"),
        h("p", { role: "alert", class: "form-alert" }, error instanceof ApiError && error.status === 404 ? "It may have been removed." : describeError(error)),
      );
      return;
    }
    render();
  }

  function render() {
    document.title = `${product.name} · the mesh`;
    const stock = h("p", { class: "stock", id: "stock", "aria-live": "polite" });
    const showStock = () => {
      const n = Number(product.stock || 0);
      stock.className = n > 0 ? "stock in-stock" : "stock out-of-stock";
      stock.textContent = n > 0 ? `In stock: ${n}` : "Out of stock";
    };
    showStock();
    const attributes = Object.entries(product.attributes || {});
    section.replaceChildren(
      h("h1", {}, product.name),
      h("p", { class: "price price-large" }, formatPrice(product.priceCents, product.currency)),
      stock,
      h("p", {}, product.description || ""),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Category"), h("dd", {}, h("a", { href: `#/?category=${encodeURIComponent(product.category)}` }, product.category)),
        h("dt", {}, "SKU"), h("dd", {}, product.sku),
        attributes.map(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "object" ? JSON.stringify(v) : String(v))]),
      ),
      reserveBlock(showStock),
    );
  }

  function reserveBlock(showStock) {
    if (!signedIn()) {
      return h(
        "div",
        { class: "card reserve" },
        h("h2", {}, "Reserve"),
        h("p", {}, h("a", { href: `#/signin?next=${encodeURIComponent(location.hash)}` }, "Sign in"), " to reserve this product."),
      );
    }
    const quantity = h("input", { id: "quantity", name: "quantity", type: "number", min: "1", step: "1", value: "1", required: true, inputmode: "numeric" });
    const button = h("button", { type: "submit", class: "button" }, "Reserve");
    const result = h("div", { class: "reserve-result", role: "status", "aria-live": "polite" });
    const alert = h("p", { class: "form-alert", role: "alert", hidden: true });
    const reservations = h("ul", { class: "reservations", "aria-label": "Your reservations" });
    let attempt = null; // {key, quantity}: the attempt to retry after a network failure

    const form = h(
      "form",
      { class: "card reserve", "aria-labelledby": "reserve-heading" },
      h("h2", { id: "reserve-heading" }, "Reserve"),
      h("div", { class: "field field-inline" }, h("label", { for: "quantity" }, "Quantity"), quantity, button),
      alert,
      result,
      reservations,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const n = Number(quantity.value);
      alert.hidden = true;
      result.textContent = "";
      if (!Number.isInteger(n) || n < 1) {
        showAlert("Enter a whole number, 1 or more.");
        quantity.focus();
        return;
      }
      if (!attempt || attempt.quantity !== n) attempt = { key: newId(), quantity: n };
      button.disabled = true;
      try {
        const reservation = await api.reserve(product.id, n, attempt.key);
        attempt = null;
        product.stock = reservation.remainingStock;
        showStock();
        result.textContent = `Reserved ${reservation.quantity}. ${reservation.remainingStock} left in stock.`;
        reservations.append(reservationItem(reservation, showStock));
      } catch (error) {
        if (!(error instanceof NetworkError)) attempt = null; // answered: the next try is new
        if (error instanceof ApiError && error.status === 409 && error.problem.availableStock !== undefined) {
          product.stock = Number(error.problem.availableStock);
          showStock();
        }
        if (error instanceof ApiError && error.status === 429) {
          startCountdown(error.retryAfter || 1);
          return;
        }
        showAlert(describeError(error));
      } finally {
        if (!countdown) button.disabled = false;
      }
    });

    function showAlert(text) {
      alert.textContent = text;
      alert.hidden = false;
    }

    function startCountdown(seconds) {
      clearInterval(countdown);
      let left = seconds;
      const tick = () => {
        if (left <= 0) {
          clearInterval(countdown);
          countdown = null;
          button.disabled = false;
          showAlert("You can reserve again now.");
          return;
        }
        showAlert(`Too many reservations: try again in ${left} s.`);
        left -= 1;
      };
      button.disabled = true;
      tick();
      countdown = setInterval(tick, 1000);
    }

    return form;
  }

  function reservationItem(reservation, showStock) {
    const releaseButton = h("button", { type: "button", class: "link-button" }, "Release");
    const item = h(
      "li",
      {},
      `${reservation.quantity} reserved `,
      h("span", { class: "muted" }, `(reservation ${reservation.reservationId.slice(0, 8)})`),
      " ",
      releaseButton,
    );
    releaseButton.addEventListener("click", async () => {
      releaseButton.disabled = true;
      try {
        const released = await api.release(reservation.reservationId);
        product.stock = released.remainingStock ?? Number(product.stock) + reservation.quantity;
        showStock();
        item.replaceChildren(`${reservation.quantity} released.`);
      } catch (error) {
        releaseButton.disabled = false;
        item.append(h("span", { class: "field-error", role: "alert" }, ` ${describeError(error)}`));
      }
    });
    return item;
  }

  return {
    unmount() {
      controller.abort();
      clearInterval(countdown);
    },
  };
}
