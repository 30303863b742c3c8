// One HTTP call to the gateway, and what its errors mean to a person.
//
// The API answers JSON, and every error is an RFC 9457 problem (application/problem+json:
// status, title, detail, requestId, and per-field `errors`). A refused request (429) carries
// `Retry-After` and `retryAfterSeconds`; a 409 from a reservation carries `availableStock`.

export class ApiError extends Error {
  constructor(status, problem, headers) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem || {};
    this.requestId = this.problem.requestId || headers?.get("x-request-id") || null;
    this.retryAfter = retryAfterSeconds(headers, this.problem);
    this.fieldErrors = Array.isArray(this.problem.errors) ? this.problem.errors : [];
  }
}

/** The browser could not reach the gateway at all (offline, refused, aborted by a timeout). */
export class NetworkError extends Error {
  constructor(cause) {
    super("The server cannot be reached. Check your connection and try again.");
    this.name = "NetworkError";
    this.cause = cause;
  }
}

/** Seconds to wait before retrying: the `Retry-After` header (seconds or an HTTP date), else
 *  the problem's `retryAfterSeconds`; null when neither says. */
export function retryAfterSeconds(headers, problem) {
  const header = headers?.get("retry-after");
  if (header) {
    const seconds = Number(header);
    if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
    const date = Date.parse(header);
    if (!Number.isNaN(date)) return Math.max(0, Math.ceil((date - Date.now()) / 1000));
  }
  const fromBody = Number(problem?.retryAfterSeconds);
  return Number.isFinite(fromBody) && fromBody > 0 ? Math.ceil(fromBody) : null;
}

/**
 * One request. `body` is sent as JSON; `query` ({name: value}, empty values left out) is
 * appended. Resolves to {status, headers, data} for 2xx and 304; rejects with ApiError for
 * an error status, NetworkError when nothing came back (an AbortError passes through).
 */
export async function call(method, path, { body, query, headers = {}, signal } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const init = { method, headers: { accept: "application/json", ...headers }, signal };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    if (error?.name === "AbortError") throw error;
    throw new NetworkError(error);
  }
  const data = await readBody(response);
  if (!response.ok && response.status !== 304) {
    throw new ApiError(response.status, data && typeof data === "object" ? data : null, response.headers);
  }
  return { status: response.status, headers: response.headers, data };
}

async function readBody(response) {
  const type = response.headers.get("content-type") || "";
  if (response.status === 204 || response.status === 304) return null;
  const text = await response.text();
  if (!text) return null;
  if (type.includes("json")) {
    try {
      return JSON.parse(text);
    } catch {
      return null;
    }
  }
  return { detail: text.slice(0, 300) };
}

/** A sentence for a person, from any error the API calls can throw. */
export function describeError(error) {
  if (error instanceof NetworkError) return error.message;
  if (!(error instanceof ApiError)) return "Something went wrong. Please try again.";
  const p = error.problem;
  switch (error.status) {
    case 401:
      return "Please sign in again: your session has ended.";
    case 403:
      return p.detail || "You are not allowed to do that.";
    case 409:
      if (p.availableStock !== undefined) {
        const n = Number(p.availableStock);
        return n === 0 ? "Out of stock: none left." : `Out of stock: only ${n} left.`;
      }
      return p.detail || "That conflicts with the current state.";
    case 429:
      return error.retryAfter
        ? `Too many requests: try again in ${error.retryAfter} s.`
        : "Too many requests: try again shortly.";
    case 502:
    case 503:
    case 504:
      return `The service is unavailable right now (${error.status}). Try again in a moment.`;
    default: {
      const fields = error.fieldErrors.map((f) => `${f.field}: ${f.message}`).join("; ");
      return fields || p.detail || p.title || `Request failed (${error.status}).`;
    }
  }
}
