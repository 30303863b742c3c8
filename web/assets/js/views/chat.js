// Chat: the rooms (list, create), and one room at a time: its history (REST, older pages as
// you scroll up), its live messages, who is here and who is typing (WebSocket).
//
// The log holds each message once, by seq, in seq order, whichever way it came (history,
// live, a replay after a reconnection, our own ack); our own messages show at once as
// "sending" and take their place when the server has stored them.

import * as api from "../api.js";
import { ChatClient } from "../chat-client.js";
import { describeError } from "../http.js";
import { clear, formatTime, h } from "../dom.js";
import { accessToken, currentUser, refresh, signedIn } from "../session.js";

const HISTORY_PAGE = 30;
const NEAR_TOP_PX = 48;
const NEAR_BOTTOM_PX = 96;
const TYPING_SHOWN_MS = 4_000;
const STATUS_TEXT = {
  idle: "",
  connecting: "Connecting…",
  online: "Connected",
  offline: "You are offline. Messages you send will go out when you are back.",
  "signed-out": "Signed out.",
  closed: "",
};

function socketUrl() {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws/chat`;
}

export function chatView(container, ctx) {
  document.title = "Chat · the mesh";
  if (!signedIn()) {
    container.append(
      h("section", { class: "narrow card" },
        h("h1", {}, "Chat"),
        h("p", {}, h("a", { href: `#/signin?next=${encodeURIComponent(location.hash || "#/chat")}` }, "Sign in"), " or ",
          h("a", { href: `#/signup?next=${encodeURIComponent(location.hash || "#/chat")}` }, "create an account"), " to chat."),
      ),
    );
    return {};
  }
  const me = currentUser();
  const nameOf = (userId) => (userId === me.id ? "You" : `Member ${String(userId).slice(0, 8)}`);
  const client = new ChatClient({
    url: socketUrl(),
    tokenProvider: (force) => (force ? refresh().catch(() => null) : accessToken()),
  });

  // Rooms column.
  let rooms = [];
  let roomsNext = "";
  const roomList = h("ul", { class: "room-list" });
  const moreRooms = h("button", { type: "button", class: "link-button", hidden: true }, "More rooms");
  const roomName = h("input", { id: "room-name", name: "name", required: true, maxlength: "100", autocomplete: "off" });
  const roomPrivate = h("input", { id: "room-private", name: "private", type: "checkbox" });
  const roomAlert = h("p", { class: "form-alert", role: "alert", hidden: true });
  const createForm = h(
    "form",
    { class: "create-room", "aria-labelledby": "create-room-heading" },
    h("h3", { id: "create-room-heading" }, "New room"),
    h("div", { class: "field" }, h("label", { for: "room-name" }, "New room name"), roomName),
    h("div", { class: "field field-check" }, roomPrivate, h("label", { for: "room-private" }, "Private (members only)")),
    roomAlert,
    h("button", { type: "submit", class: "button button-small" }, "Create room"),
  );

  // Room pane.
  const pane = h("section", { class: "room-pane", "aria-labelledby": "room-title" });
  const status = h("p", { id: "chat-status", class: "chat-status", role: "status", "aria-live": "polite", dataset: { state: "idle" } });

  container.append(
    h("section", { class: "chat" },
      h("div", { class: "chat-heading" }, h("h1", {}, "Chat"), status),
      h("div", { class: "chat-layout" },
        h("nav", { class: "rooms", "aria-labelledby": "rooms-heading" }, h("h2", { id: "rooms-heading" }, "Rooms"), roomList, moreRooms, createForm),
        pane,
      ),
    ),
  );

  let room = null; // the open room's state
  client.addEventListener("status", ({ detail }) => {
    status.dataset.state = detail.state;
    status.textContent =
      detail.state === "reconnecting"
        ? `Connection lost. Reconnecting in ${detail.retryIn} s…`
        : STATUS_TEXT[detail.state] ?? detail.state;
    if (room) room.composerNote.textContent = detail.state === "online" ? "" : "Messages are sent when the connection is back.";
  });
  client.addEventListener("joined", ({ detail }) => room?.id === detail.room && room.onJoined(detail));
  client.addEventListener("message", ({ detail }) => room?.id === detail.message.room && room.add(detail.message, true));
  client.addEventListener("ack", ({ detail }) => room?.acked(detail));
  client.addEventListener("failed", ({ detail }) => room?.failed(detail));
  client.addEventListener("presence", ({ detail }) => room?.id === detail.room && room.presence(detail.joins, detail.leaves));
  client.addEventListener("typing", ({ detail }) => room?.id === detail.room && room.typing(detail.userId));
  client.addEventListener("error", ({ detail }) => room?.error(detail));
  client.start();

  moreRooms.addEventListener("click", () => loadRooms(false));
  createForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    roomAlert.hidden = true;
    const name = roomName.value.trim();
    if (!name) {
      roomAlert.textContent = "Give the room a name.";
      roomAlert.hidden = false;
      roomName.focus();
      return;
    }
    try {
      const created = await api.createRoom(name, roomPrivate.checked);
      rooms.push(created);
      renderRooms();
      roomName.value = "";
      roomPrivate.checked = false;
      ctx.navigate(`/chat/${encodeURIComponent(created.id)}`);
    } catch (error) {
      roomAlert.textContent = describeError(error);
      roomAlert.hidden = false;
    }
  });

  loadRooms(true).then(() => open(ctx.params.room));

  async function loadRooms(reset) {
    try {
      const page = await api.rooms(reset ? undefined : roomsNext);
      rooms = reset ? page.rooms || [] : [...rooms, ...(page.rooms || [])];
      roomsNext = page.nextPageToken || "";
    } catch (error) {
      roomList.replaceChildren(h("li", { class: "form-alert", role: "alert" }, describeError(error)));
      return;
    }
    moreRooms.hidden = !roomsNext;
    renderRooms();
  }

  function renderRooms() {
    if (!rooms.length) {
      roomList.replaceChildren(h("li", { class: "muted" }, "No rooms yet: create the first one."));
      return;
    }
    roomList.replaceChildren(
      ...rooms.map((r) =>
        h("li", {},
          h("a", { href: `#/chat/${encodeURIComponent(r.id)}`, "aria-current": room?.id === r.id ? "page" : false },
            r.name, r.private ? h("span", { class: "badge" }, " private") : null),
        ),
      ),
    );
  }

  function open(roomId) {
    if (room?.id === roomId) return;
    if (room) {
      client.leave(room.id);
      room.close();
    }
    room = null;
    clear(pane);
    if (!roomId) {
      pane.append(h("h2", { id: "room-title" }, "No room open"), h("p", { class: "muted" }, "Pick a room on the left, or create one."));
      renderRooms();
      return;
    }
    room = roomPane(roomId);
    renderRooms();
    client.join(roomId);
  }

  function roomPane(roomId) {
    const known = rooms.find((r) => r.id === roomId);
    const bySeq = new Map(); // seq -> element
    const pending = new Map(); // clientMsgId -> element
    const typers = new Map(); // userId -> timeout
    const present = new Set();
    let oldest = null;
    let hasMore = false;
    let loadingOlder = false;
    let historyLoaded = false;

    const alert = h("p", { class: "form-alert", role: "alert", hidden: true });
    const presenceList = h("ul", { class: "presence", "aria-label": "Here now" });
    const older = h("button", { type: "button", class: "link-button older", hidden: true }, "Load older messages");
    const list = h("ol", { id: "messages", class: "messages", role: "log", "aria-live": "polite", "aria-label": "Messages" });
    const empty = h("p", { class: "muted empty" }, "Loading messages…");
    const log = h("div", { class: "log", tabindex: "0", "aria-label": "Message history (scroll up for older messages)" }, older, empty, list);
    const typingLine = h("p", { id: "typing", class: "typing", "aria-live": "polite" });
    const input = h("input", { id: "message", name: "text", autocomplete: "off", maxlength: "4000", required: true });
    const composerNote = h("p", { class: "muted composer-note" });
    const composer = h(
      "form",
      { class: "composer" },
      h("label", { for: "message", class: "visually-hidden" }, "Message"),
      input,
      h("button", { type: "submit", class: "button" }, "Send"),
    );
    pane.append(
      h("div", { class: "room-header" },
        h("h2", { id: "room-title" }, known ? known.name : "Room"),
        h("div", { class: "presence-line" }, h("span", { class: "muted" }, "Here now: "), presenceList),
      ),
      alert,
      log,
      typingLine,
      composer,
      composerNote,
    );
    input.focus();

    log.addEventListener("scroll", () => {
      if (log.scrollTop < NEAR_TOP_PX) loadOlder();
    });
    older.addEventListener("click", () => loadOlder());
    input.addEventListener("input", () => {
      if (input.value.trim()) client.typing(roomId);
    });
    composer.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      const clientMsgId = client.send(roomId, text);
      const el = messageElement({ userId: me.id, text, clientMsgId }, true);
      pending.set(clientMsgId, el);
      list.append(el);
      empty.hidden = true;
      input.value = "";
      scrollToBottom();
    });

    function nearBottom() {
      return log.scrollHeight - log.scrollTop - log.clientHeight < NEAR_BOTTOM_PX;
    }

    function scrollToBottom() {
      log.scrollTop = log.scrollHeight;
    }

    function messageElement(m, isPending) {
      const mine = m.userId === me.id;
      const el = h(
        "li",
        { class: `message${mine ? " mine" : ""}${isPending ? " pending" : ""}`, dataset: isPending ? { pending: "true", clientMsgId: m.clientMsgId } : { seq: String(m.seq), clientMsgId: m.clientMsgId || "" } },
        h("p", { class: "meta" },
          h("span", { class: "author" }, nameOf(m.userId)), " ",
          m.ts ? h("time", { datetime: m.ts }, formatTime(m.ts)) : h("span", { class: "state" }, "sending…")),
        h("p", { class: "text" }, m.text),
      );
      return el;
    }

    function insertSorted(el, seq) {
      let node = list.lastElementChild;
      while (node && (node.dataset.pending || Number(node.dataset.seq) > seq)) node = node.previousElementSibling;
      list.insertBefore(el, node ? node.nextElementSibling : list.firstElementChild);
    }

    function add(m, live) {
      if (bySeq.has(m.seq)) return; // seen already (history, replay, our ack): once only
      const stick = live && (nearBottom() || m.userId === me.id);
      const mine = m.userId === me.id && pending.get(m.clientMsgId);
      if (mine) {
        pending.delete(m.clientMsgId);
        mine.remove();
      }
      const el = messageElement(m, false);
      bySeq.set(m.seq, el);
      insertSorted(el, m.seq);
      if (oldest === null || m.seq < oldest) oldest = m.seq;
      empty.hidden = true;
      if (live && m.userId !== me.id) clearTyping(m.userId);
      if (stick) scrollToBottom();
    }

    async function loadHistory(before) {
      const page = await api.history(roomId, before, HISTORY_PAGE);
      for (const m of page.messages || []) add(m, false);
      hasMore = page.nextBefore !== undefined && page.nextBefore !== null;
      older.hidden = !hasMore;
    }

    async function loadInitial(lastSeq) {
      historyLoaded = false;
      alert.hidden = true;
      if (lastSeq > 0) {
        try {
          await loadHistory(lastSeq + 1);
        } catch (error) {
          showError(describeError(error));
        }
      }
      historyLoaded = true;
      empty.textContent = "No messages yet: say hello.";
      empty.hidden = list.childElementCount > 0;
      scrollToBottom();
    }

    async function loadOlder() {
      if (!hasMore || loadingOlder || !historyLoaded || oldest === null) return;
      loadingOlder = true;
      older.disabled = true;
      const fromBottom = log.scrollHeight - log.scrollTop;
      try {
        await loadHistory(oldest);
        log.scrollTop = log.scrollHeight - fromBottom; // keep the reader's place
      } catch (error) {
        showError(describeError(error));
      } finally {
        loadingOlder = false;
        older.disabled = false;
      }
    }

    function showError(text) {
      alert.textContent = text;
      alert.hidden = false;
    }

    function renderPresence() {
      const ids = [...present].sort((a, b) => (a === me.id ? -1 : b === me.id ? 1 : a.localeCompare(b)));
      presenceList.replaceChildren(...ids.map((id) => h("li", { dataset: { userId: id } }, nameOf(id))));
    }

    function clearTyping(userId) {
      clearTimeout(typers.get(userId));
      typers.delete(userId);
      renderTyping();
    }

    function renderTyping() {
      const names = [...typers.keys()].map(nameOf);
      typingLine.textContent =
        names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
    }

    return {
      id: roomId,
      composerNote,
      add,
      onJoined(detail) {
        present.clear();
        for (const id of detail.presence) present.add(id);
        renderPresence();
        if (!known) {
          const found = rooms.find((r) => r.id === roomId);
          if (found) pane.querySelector("#room-title").textContent = found.name;
        }
        if (!detail.resumed || detail.recovered === false) {
          if (detail.recovered === false) {
            // Too far behind for a replay: start again from the newest page.
            bySeq.clear();
            for (const el of [...list.children]) if (!el.dataset.pending) el.remove();
            oldest = null;
          }
          loadInitial(detail.lastSeq);
        }
      },
      acked({ clientMsgId, seq, id }) {
        const el = pending.get(clientMsgId);
        if (!el) return;
        add({ room: roomId, seq, id, userId: me.id, text: el.querySelector(".text").textContent, ts: new Date().toISOString(), clientMsgId }, true);
      },
      failed({ clientMsgId, message }) {
        const el = pending.get(clientMsgId);
        if (!el) return;
        pending.delete(clientMsgId);
        el.classList.add("failed");
        el.querySelector(".state").textContent = `not sent: ${message}`;
      },
      presence(joins, leaves) {
        for (const id of joins || []) present.add(id);
        for (const id of leaves || []) {
          present.delete(id);
          clearTyping(id);
        }
        renderPresence();
      },
      typing(userId) {
        if (userId === me.id) return;
        clearTimeout(typers.get(userId));
        typers.set(userId, setTimeout(() => clearTyping(userId), TYPING_SHOWN_MS));
        renderTyping();
      },
      error(frame) {
        if (frame.ref && frame.ref !== roomId) return;
        if (frame.code === "rate_limited") {
          showError("You are sending too fast: your messages go out in a moment.");
          return;
        }
        showError(
          frame.code === "room_not_found" ? "This room does not exist."
            : frame.code === "not_a_member" ? "This room is private: ask its owner to add you."
              : frame.message || frame.code,
        );
        if (frame.code === "room_not_found" || frame.code === "not_a_member") empty.hidden = true;
      },
      close() {
        for (const timer of typers.values()) clearTimeout(timer);
      },
    };
  }

  return {
    update(next) {
      open(next.params.room);
    },
    unmount() {
      room?.close();
      client.stop();
    },
  };
}
