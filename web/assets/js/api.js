// The API calls the console makes. Signed-in calls carry the access token; a 401 is answered
// by one transparent refresh and one retry (the token may have expired between our check and
// the server's), after which the session is over.

import { ApiError, call } from "./http.js";
import { accessToken, refresh, signedIn } from "./session.js";

async function authed(method, path, options = {}) {
  const token = await accessToken();
  if (!token) throw new ApiError(401, { title: "Unauthorized", detail: "Sign in first." });
  try {
    return await call(method, path, withToken(options, token));
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401 || !signedIn()) throw error;
    const fresh = (await accessToken()) === token ? await refresh() : await accessToken();
    if (!fresh) throw error;
    return call(method, path, withToken(options, fresh));
  }
}

function withToken(options, token) {
  return { ...options, headers: { ...(options.headers || {}), authorization: `Bearer ${token}` } };
}

async function anyone(method, path, options) {
  return call(method, path, options);
}

// Catalog (public reads, signed-in reservations).
export const categories = async () => (await anyone("GET", "/api/v1/categories")).data.categories || [];

export const products = async (query, signal) =>
  (await anyone("GET", "/api/v1/products", { query, signal })).data;

export const product = async (id, signal) =>
  (await anyone("GET", `/api/v1/products/${encodeURIComponent(id)}`, { signal })).data;

export const reserve = async (id, quantity, idempotencyKey) =>
  (
    await authed("POST", `/api/v1/products/${encodeURIComponent(id)}:reserve`, {
      body: { quantity, idempotencyKey },
    })
  ).data;

export const release = async (reservationId) =>
  (await authed("POST", `/api/v1/reservations/${encodeURIComponent(reservationId)}:release`, { body: {} }))
    .data;

// Chat rooms and history.
export const rooms = async (pageToken) =>
  (await authed("GET", "/api/v1/chat/rooms", { query: { pageSize: 50, pageToken } })).data;

export const createRoom = async (name, isPrivate) =>
  (await authed("POST", "/api/v1/chat/rooms", { body: { name, private: isPrivate } })).data;

export const history = async (roomId, before, limit) =>
  (
    await authed("GET", `/api/v1/chat/rooms/${encodeURIComponent(roomId)}/messages`, {
      query: { before, limit },
    })
  ).data;
