// The chat WebSocket: one socket for the console, authenticated with the subprotocol pair
// `bearer, <access token>` (browsers cannot set an Authorization header on a WebSocket; the
// server answers with the `bearer` subprotocol).
//
// Reconnects by itself, with exponential backoff and jitter, at once when the browser comes
// back online, and when the server goes quiet (a ping every 15 s must be answered within
// 10 s). On every (re)connection it joins its rooms again with `since` = the last seq it has
// seen in each, so the server replays exactly what was missed; message frames are passed on
// only once per seq, so a replay that overlaps what was already seen shows no duplicate.
// Sends not yet acknowledged stay in an outbox and go again, with the same clientMsgId, after
// a reconnection: the server stores a message once per clientMsgId, so a resend whose first
// copy did arrive gets the original ack instead of a second message.
//
// Events (CustomEvent, details as listed): status {state, retryIn?}, joined {room, lastSeq,
// presence, recovered, resumed}, message {message, live}, ack {clientMsgId, seq, id},
// presence {room, joins, leaves}, typing {room, userId}, failed {clientMsgId, code, message},
// error {code, message, ref}.

import { newId } from "./dom.js";

const PING_EVERY_MS = 15_000;
const PONG_WITHIN_MS = 10_000;
const TYPING_EVERY_MS = 3_000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const RESEND_AFTER_MS = 1_000;
// Errors that will not go away by sending the same frame again.
const FINAL_SEND_ERRORS = new Set([
  "invalid_json", "invalid_frame", "unknown_type", "missing_field", "invalid_field",
  "text_too_long", "room_not_found", "not_a_member",
]);

export class ChatClient extends EventTarget {
  /** tokenProvider(force) resolves to an access token (a fresh one when force), or null. */
  constructor({ url, tokenProvider }) {
    super();
    this.url = url;
    this.tokenProvider = tokenProvider;
    this.ws = null;
    this.state = "idle";
    this.rooms = new Map(); // room id -> {lastSeq: number | null}
    this.outbox = new Map(); // clientMsgId -> {room, clientMsgId, text}, in sending order
    this.seen = new Map(); // room id -> Set of seqs passed on
    this.typingSent = new Map(); // room id -> time of our last typing frame
    this.attempt = 0;
    this.failuresBeforeOpen = 0;
    this.timers = { retry: null, ping: null, pong: null, resend: null };
    this.stopped = true;
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => this.dropConnection("offline");
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    if (navigator.onLine === false) this.setState("offline");
    else this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    this.clearTimers();
    if (this.ws) {
      const ws = this.ws;
      this.detach(ws);
      ws.close(1000, "bye");
    }
    this.setState("closed");
  }

  /** Join `room` (now if connected, else on connection); the first join has no `since`. */
  join(room) {
    if (!this.rooms.has(room)) this.rooms.set(room, { lastSeq: null });
    if (!this.seen.has(room)) this.seen.set(room, new Set());
    this.frame({ type: "join", room, ...this.sinceOf(room) });
  }

  leave(room) {
    if (!this.rooms.delete(room)) return;
    this.seen.delete(room);
    this.frame({ type: "leave", room });
  }

  /** Queue a message; returns its clientMsgId (its ack and its message frame carry it). */
  send(room, text) {
    const clientMsgId = newId();
    const item = { room, clientMsgId, text };
    this.outbox.set(clientMsgId, item);
    this.frame({ type: "send", ...item });
    return clientMsgId;
  }

  /** Tell the room we are typing (at most once per 3 s per room; the server throttles too). */
  typing(room) {
    const now = Date.now();
    if (now - (this.typingSent.get(room) || 0) < TYPING_EVERY_MS) return;
    if (this.frame({ type: "typing", room })) this.typingSent.set(room, now);
  }

  /** Messages up to `seq` are known by other means (the REST history): resume from there. */
  noteSeen(room, seq) {
    const state = this.rooms.get(room);
    if (state && (state.lastSeq === null || seq > state.lastSeq)) state.lastSeq = seq;
  }

  sinceOf(room) {
    const state = this.rooms.get(room);
    return state && state.lastSeq !== null ? { since: state.lastSeq } : {};
  }

  frame(frame) {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  setState(state, extra = {}) {
    this.state = state;
    this.emit("status", { state, ...extra });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  async connect() {
    if (this.stopped || this.ws) return;
    this.clearTimers();
    this.setState("connecting");
    let token;
    try {
      token = await this.tokenProvider(this.failuresBeforeOpen >= 2);
    } catch {
      token = null;
    }
    if (this.stopped || this.ws) return;
    if (!token) {
      this.setState("signed-out");
      return;
    }
    let ws;
    try {
      ws = new WebSocket(this.url, ["bearer", token]);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.attempt = 0;
      this.failuresBeforeOpen = 0;
      this.setState("online");
      for (const room of this.rooms.keys()) {
        this.frame({ type: "join", room, ...this.sinceOf(room) });
      }
      this.flushOutbox();
      this.schedulePing();
    };
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = (event) => {
      this.detach(ws);
      if (!opened) this.failuresBeforeOpen += 1;
      if (this.stopped) return;
      // 1012: that replica is restarting; another takes us at once.
      this.scheduleRetry(event.code === 1012 ? 100 : undefined);
    };
    ws.onerror = () => {}; // a close follows
  }

  detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (this.ws === ws) this.ws = null;
    clearTimeout(this.timers.ping);
    clearTimeout(this.timers.pong);
  }

  /** Give up on the current socket (offline, or the server stopped answering). */
  dropConnection(reason) {
    if (this.stopped) return;
    if (this.ws) {
      const ws = this.ws;
      this.detach(ws);
      try {
        ws.close(4000, reason);
      } catch {
        // already closing
      }
    }
    this.clearTimers();
    if (reason === "offline" || navigator.onLine === false) this.setState("offline");
    else this.scheduleRetry();
  }

  reconnectNow() {
    if (this.stopped || this.ws) return;
    this.attempt = 0;
    this.connect();
  }

  scheduleRetry(delayMs) {
    if (this.stopped) return;
    clearTimeout(this.timers.retry);
    if (navigator.onLine === false) {
      this.setState("offline"); // the `online` event reconnects
      return;
    }
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = delayMs ?? Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.attempt += 1;
    this.setState("reconnecting", { retryIn: Math.max(1, Math.round(delay / 1000)) });
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }

  schedulePing() {
    clearTimeout(this.timers.ping);
    this.timers.ping = setTimeout(() => {
      if (!this.frame({ type: "ping" })) return;
      clearTimeout(this.timers.pong);
      this.timers.pong = setTimeout(() => this.dropConnection("no pong"), PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  clearTimers() {
    for (const timer of Object.values(this.timers)) clearTimeout(timer);
  }

  flushOutbox() {
    for (const item of this.outbox.values()) {
      if (!this.frame({ type: "send", ...item })) return;
    }
  }

  resendSoon() {
    clearTimeout(this.timers.resend);
    this.timers.resend = setTimeout(() => this.flushOutbox(), RESEND_AFTER_MS);
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    // Any frame is a sign of life.
    clearTimeout(this.timers.pong);
    this.schedulePing();
    switch (frame.type) {
      case "joined": {
        const state = this.rooms.get(frame.room);
        if (!state) return;
        const resumed = state.lastSeq !== null;
        if (!resumed || frame.recovered === false) {
          // A first join, or too far behind to replay: the page loads the history over REST.
          state.lastSeq = frame.lastSeq;
          this.seen.set(frame.room, new Set());
        }
        this.emit("joined", {
          room: frame.room,
          lastSeq: frame.lastSeq,
          presence: frame.presence || [],
          recovered: frame.recovered,
          resumed,
        });
        return;
      }
      case "message": {
        const state = this.rooms.get(frame.room);
        if (!state) return;
        const seen = this.seen.get(frame.room);
        if (seen.has(frame.seq)) return; // a replay of what we have: not twice
        seen.add(frame.seq);
        if (state.lastSeq === null || frame.seq > state.lastSeq) state.lastSeq = frame.seq;
        this.outbox.delete(frame.clientMsgId);
        this.emit("message", { message: frame, live: true });
        return;
      }
      case "ack":
        if (this.outbox.delete(frame.clientMsgId)) this.emit("ack", frame);
        return;
      case "presence":
      case "typing":
        if (this.rooms.has(frame.room)) this.emit(frame.type, frame);
        return;
      case "error":
        if (frame.ref && this.outbox.has(frame.ref)) {
          if (FINAL_SEND_ERRORS.has(frame.code)) {
            this.outbox.delete(frame.ref);
            this.emit("failed", { clientMsgId: frame.ref, code: frame.code, message: frame.message });
          } else {
            this.resendSoon(); // unavailable: the server asks us to retry
          }
          return;
        }
        if (frame.code === "rate_limited" && this.outbox.size) this.resendSoon();
        this.emit("error", frame);
        return;
      default:
        return; // pong, or a frame type newer than this page
    }
  }
}
