// Sign in and sign up. Field problems from the API (`errors: [{field, message}]`) are shown
// next to their inputs; anything else in the form's alert line.

import { ApiError, describeError } from "../http.js";
import { field, h, showFieldErrors } from "../dom.js";
import { signIn, signUp } from "../session.js";

function safeNext(next) {
  return typeof next === "string" && next.startsWith("#/") && !next.startsWith("#/sign") ? next : "#/";
}

function form(container, ctx, { title, intro, fields, submitLabel, busyLabel, submit, otherLink }) {
  document.title = `${title} · the mesh`;
  const alert = h("p", { class: "form-alert", role: "alert", hidden: true });
  const button = h("button", { type: "submit", class: "button" }, submitLabel);
  const formEl = h(
    "form",
    { class: "card form", novalidate: true, "aria-labelledby": "form-title" },
    h("h1", { id: "form-title" }, title),
    h("p", { class: "muted" }, intro),
    Object.values(fields).map((f) => f.field),
    alert,
    button,
    h("p", { class: "muted" }, otherLink),
  );
  formEl.addEventListener("submit", async (event) => {
    event.preventDefault();
    alert.hidden = true;
    const missing = Object.entries(fields).filter(([, f]) => f.input.required && !f.input.value.trim());
    if (missing.length) {
      showFieldErrors(fields, missing.map(([name]) => ({ field: name, message: "Required." })));
      return;
    }
    showFieldErrors(fields, []);
    button.disabled = true;
    button.textContent = busyLabel;
    try {
      await submit();
      location.hash = safeNext(ctx.query.next);
    } catch (error) {
      const unclaimed = error instanceof ApiError ? showFieldErrors(fields, error.fieldErrors) : [];
      const message = messageFor(error, unclaimed);
      if (message) {
        alert.textContent = message;
        alert.hidden = false;
      }
    } finally {
      button.disabled = false;
      button.textContent = submitLabel;
    }
  });
  container.append(h("section", { class: "narrow" }, formEl));
  Object.values(fields)[0].input.focus();
  return formEl;

  function messageFor(error, unclaimed) {
    if (error instanceof ApiError && error.fieldErrors.length && !unclaimed.length) return "";
    if (error instanceof ApiError && error.status === 401) return "Wrong email or password.";
    if (error instanceof ApiError && error.status === 409) {
      return "An account with this email already exists: sign in instead.";
    }
    return describeError(error);
  }
}

export function signInView(container, ctx) {
  const fields = {
    email: field("Email", { name: "email", type: "email", autocomplete: "username", required: true }),
    password: field("Password", { name: "password", type: "password", autocomplete: "current-password", required: true }),
  };
  form(container, ctx, {
    title: "Sign in",
    intro: "Welcome back.",
    fields,
    submitLabel: "Sign in",
    busyLabel: "Signing in…",
    submit: () => signIn(fields.email.input.value.trim(), fields.password.input.value),
    otherLink: ["No account yet? ", h("a", { href: `#/signup${ctx.query.next ? `?next=${encodeURIComponent(ctx.query.next)}` : ""}` }, "Sign up")],
  });
}

export function signUpView(container, ctx) {
  const fields = {
    displayName: field("Display name", { name: "displayName", autocomplete: "nickname", required: true, maxlength: "100" }),
    email: field("Email", { name: "email", type: "email", autocomplete: "email", required: true }),
    password: field("Password (12 to 128 characters)", {
      name: "password", type: "password", autocomplete: "new-password", required: true, minlength: "12", maxlength: "128",
    }),
  };
  form(container, ctx, {
    title: "Create an account",
    intro: "An account lets you reserve products and chat.",
    fields,
    submitLabel: "Sign up",
    busyLabel: "Creating your account…",
    submit: () =>
      signUp(fields.email.input.value.trim(), fields.password.input.value, fields.displayName.input.value.trim()),
    otherLink: ["Have an account? ", h("a", { href: `#/signin${ctx.query.next ? `?next=${encodeURIComponent(ctx.query.next)}` : ""}` }, "Sign in")],
  });
}
