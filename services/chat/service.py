"""The chat domain: who may do what with rooms, and storing a message exactly once.

Plain rules over `ChatStore`; the REST handlers and the WebSocket session are thin
transports over it. Failures are `ChatError`s with a code the transports map (an HTTP
status, an ``error`` frame code).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from bson import ObjectId

from mesh.errors import FieldError
from services.chat.protocol import NOT_A_MEMBER, ROOM_NOT_FOUND
from services.chat.store import ChatStore, Room, StoredMessage

MAX_ROOM_NAME: Final = 100
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
HISTORY_DEFAULT: Final = 50
HISTORY_MAX: Final = 100
PAGE_DEFAULT: Final = 20
PAGE_MAX: Final = 100


class ChatError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, message: str, field_errors: tuple[FieldError, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.field_errors = field_errors


class InvalidInput(ChatError):
    pass


class RoomNotFound(ChatError):
    status = 404
    code = ROOM_NOT_FOUND


class NotAMember(ChatError):
    status = 403
    code = NOT_A_MEMBER


class NotTheOwner(ChatError):
    status = 403
    code = "not_the_owner"


@dataclass(frozen=True, slots=True)
class SendResult:
    message: StoredMessage
    duplicate: bool  # a retry: `message` is the one stored the first time
    hole: int | None  # a seq this call allocated and left unused


class ChatService:
    def __init__(self, store: ChatStore) -> None:
        self.store = store

    async def create_room(self, user_id: str, name: object, private: object) -> Room:
        errors = []
        if not isinstance(name, str) or not name.strip():
            errors.append(FieldError("name", "must be a non-empty string"))
        elif len(name.strip()) > MAX_ROOM_NAME:
            errors.append(FieldError("name", f"must be at most {MAX_ROOM_NAME} characters"))
        elif _CONTROL.search(name):  # a name is shown to every member: no hidden characters
            errors.append(FieldError("name", "must not contain control characters"))
        if not isinstance(private, bool):
            errors.append(FieldError("private", "must be true or false"))
        if errors:
            raise InvalidInput("the room is not valid", tuple(errors))
        assert isinstance(name, str)
        assert isinstance(private, bool)
        return await self.store.create_room(name.strip(), private, user_id)

    async def visible_rooms(
        self, user_id: str, page_size: int, after_id: str | None
    ) -> tuple[list[Room], str | None]:
        return await self.store.visible_rooms(user_id, page_size, after_id)

    async def room(self, room_id: str) -> Room:
        room = await self.store.room(room_id)
        if room is None:
            raise RoomNotFound(f"room {room_id[:64]!r} does not exist")
        return room

    async def add_member(self, user_id: str, room_id: str, member_id: object) -> str:
        """The room's owner adds anyone; anyone signed in may add themselves to a public room."""
        if not isinstance(member_id, str) or not member_id.strip() or len(member_id) > 64:
            raise InvalidInput(
                "the member is not valid",
                (FieldError("userId", "must be a user id (1..64 characters)"),),
            )
        room = await self.room(room_id)
        if room.owner_id != user_id and not (not room.private and member_id == user_id):
            raise NotTheOwner("only the room's owner adds members")
        await self.store.add_member(room_id, member_id)
        return member_id

    async def history(
        self, user_id: str, room_id: str, before: int | None, limit: int
    ) -> tuple[list[StoredMessage], int | None]:
        """Messages before `before`, newest first; and the `before` of the next page."""
        await self.require_member(user_id, room_id)
        messages = await self.store.before(room_id, before, limit + 1)
        more = len(messages) > limit
        messages = messages[:limit]
        return messages, messages[-1].seq if more else None

    async def require_member(self, user_id: str, room_id: str) -> Room:
        room = await self.room(room_id)
        if not await self.store.is_member(room_id, user_id):
            raise NotAMember(f"you are not a member of room {room_id!r}")
        return room

    async def enter(self, user_id: str, room_id: str) -> Room:
        """Access to join a room: members; a public room makes the caller a member."""
        room = await self.room(room_id)
        if not await self.store.is_member(room_id, user_id):
            if room.private:
                raise NotAMember(f"room {room_id!r} is private and you are not a member")
            await self.store.add_member(room_id, user_id)
        return room

    async def send(self, user_id: str, room_id: str, client_msg_id: str, text: str) -> SendResult:
        """Store a message once per (room, user, clientMsgId), with the room's next seq.

        The seq is allocated first (an atomic ``$inc``), then the message is inserted; when
        the unique index says it was stored before (a retry after a lost ack), the original
        is returned and the fresh seq is recorded as a hole.
        """
        seq = await self.store.allocate_seq(room_id)
        message = StoredMessage(
            room_id, seq, str(ObjectId()), user_id, client_msg_id, text, _now_ms()
        )
        if await self.store.insert_message(message):
            return SendResult(message, duplicate=False, hole=None)
        await self.store.insert_hole(room_id, seq)
        original = await self.store.by_client_msg_id(room_id, user_id, client_msg_id)
        if original is None:  # pragma: no cover - the unique index just said it exists
            raise RuntimeError("duplicate message vanished")
        return SendResult(original, duplicate=True, hole=seq)


def _now_ms() -> datetime:
    """Now in UTC, truncated to the millisecond MongoDB keeps, so the ack and replays agree."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
