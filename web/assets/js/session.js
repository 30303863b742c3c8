// The signed-in session: tokens live in this module's memory only (never in localStorage or
// a cookie, so no other script and no other tab can read them; a reload signs out).
//
// Access tokens last 15 minutes. `accessToken()` refreshes one that is about to expire, and
// `api.js` refreshes once more when the server still says 401; concurrent callers share one
// refresh (refresh tokens rotate: using one twice would revoke the whole sign-in).

import { ApiError, call } from "./http.js";

const EARLY_REFRESH_MS = 60_000; // refresh when less than this is left
let tokens = null; // {accessToken, refreshToken, expiresAt (ms)}
let user = null; // {id, email, displayName, roles}
let refreshing = null; // the refresh in flight
const listeners = new Set();

export function currentUser() {
  return user;
}

export function signedIn() {
  return tokens !== null;
}

/** fn(user | null, reason) on every sign-in and sign-out; returns the unsubscriber. */
export function onSessionChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(reason) {
  for (const fn of listeners) fn(user, reason);
}

function expiryOf(accessToken, expiresIn) {
  try {
    const payload = JSON.parse(atob(accessToken.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    if (Number.isFinite(payload.exp)) return payload.exp * 1000;
  } catch {
    // not a JWT we can read: fall back on expiresIn
  }
  return Date.now() + (Number(expiresIn) || 900) * 1000;
}

function keep(pair) {
  tokens = {
    accessToken: pair.accessToken,
    refreshToken: pair.refreshToken,
    expiresAt: expiryOf(pair.accessToken, pair.expiresIn),
  };
}

export async function signUp(email, password, displayName) {
  await call("POST", "/api/v1/auth/register", { body: { email, password, displayName } });
  return signIn(email, password);
}

export async function signIn(email, password) {
  const { data } = await call("POST", "/api/v1/auth/login", { body: { email, password } });
  keep(data);
  try {
    const me = await call("GET", "/api/v1/users/me", {
      headers: { authorization: `Bearer ${tokens.accessToken}` },
    });
    user = me.data;
  } catch (error) {
    tokens = null;
    throw error;
  }
  emit("signed-in");
  return user;
}

/** Revoke the refresh token's family on the server, then forget everything. */
export async function signOut() {
  const refreshToken = tokens?.refreshToken;
  forget("signed-out");
  if (refreshToken) {
    try {
      await call("POST", "/api/v1/auth/logout", { body: { refreshToken } });
    } catch {
      // signed out here anyway; the refresh token expires on its own
    }
  }
}

function forget(reason) {
  const had = tokens !== null;
  tokens = null;
  user = null;
  refreshing = null;
  if (had) emit(reason);
}

/** A new token pair for the refresh token; one at a time. A refused refresh signs out. */
export function refresh() {
  if (!tokens) return Promise.reject(new ApiError(401, { detail: "Not signed in." }));
  if (!refreshing) {
    const spent = tokens.refreshToken;
    refreshing = call("POST", "/api/v1/auth/refresh", { body: { refreshToken: spent } })
      .then(({ data }) => {
        if (tokens?.refreshToken === spent) keep(data); // unless signed out meanwhile
        return tokens?.accessToken ?? null;
      })
      .catch((error) => {
        if (error instanceof ApiError && (error.status === 401 || error.status === 400)) {
          forget("expired");
        }
        throw error;
      })
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

/** A usable access token (refreshed first when it expires within a minute), or null when
 *  signed out. */
export async function accessToken() {
  if (!tokens) return null;
  if (refreshing) return refreshing;
  if (tokens.expiresAt - Date.now() < EARLY_REFRESH_MS) return refresh();
  return tokens.accessToken;
}
