"""Chat storage in MongoDB (database ``chat``): rooms, messages and per-room counters.

- ``rooms``: ``{_id, name, private, ownerId, members: [userId...], createdAt}``. Ids are
  ObjectId hex strings, so sorting by ``_id`` is creation order (the rooms list pages on it).
- ``counters``: ``{_id: roomId, seq}``, one per room; ``$inc`` through findOneAndUpdate is the
  atomic allocator of the room's strictly increasing ``seq``.
- ``messages``: ``{_id, room, seq, userId, clientMsgId, text, ts}``; unique on
  ``(room, seq)`` and on ``(room, userId, clientMsgId)`` (idempotent send). A seq that was
  allocated but not used (the send was a retry of a stored message) is recorded as a *hole*
  document ``{room, seq, hole: true}`` so that every replica's ordering can step over it at
  once; holes never leave this module except through `window`, which the fan-out reads.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

HOLE_USER: Final = ""  # the userId of a hole document: no user has an empty id
_NOT_HOLE: Final = {"hole": {"$ne": True}}
_ROOM_FIELDS: Final = {"name": 1, "private": 1, "ownerId": 1, "createdAt": 1}


@dataclass(frozen=True, slots=True)
class Room:
    id: str
    name: str
    private: bool
    owner_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredMessage:
    room: str
    seq: int
    id: str
    user_id: str
    client_msg_id: str
    text: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class WindowEntry:
    """A seq of a room as the fan-out sees it: a message, or a hole to step over."""

    seq: int
    message: StoredMessage | None


class InvalidPageToken(ValueError):
    pass


def _room(doc: dict[str, Any]) -> Room:
    return Room(doc["_id"], doc["name"], bool(doc["private"]), doc["ownerId"], doc["createdAt"])


def _message(doc: dict[str, Any]) -> StoredMessage:
    return StoredMessage(
        doc["room"], doc["seq"], doc["_id"], doc["userId"], doc["clientMsgId"], doc["text"],
        doc["ts"],
    )  # fmt: skip


def encode_page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(last_id)).decode().rstrip("=")


def decode_page_token(token: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        raise InvalidPageToken("pageToken is not one this API returned") from None
    if len(raw) != 12:
        raise InvalidPageToken("pageToken is not one this API returned")
    return raw.hex()


class ChatStore:
    def __init__(self, database: AsyncDatabase[Any]) -> None:
        self._rooms = database["rooms"]
        self._messages = database["messages"]
        self._counters = database["counters"]

    async def ensure_indexes(self) -> None:
        await self._messages.create_index(
            [("room", ASCENDING), ("seq", ASCENDING)], unique=True, name="room_seq"
        )
        await self._messages.create_index(
            [("room", ASCENDING), ("userId", ASCENDING), ("clientMsgId", ASCENDING)],
            unique=True,
            name="room_user_client_msg",
        )
        await self._rooms.create_index([("members", ASCENDING)], name="members")
        await self._rooms.create_index([("private", ASCENDING)], name="private")

    # Rooms.

    async def create_room(self, name: str, private: bool, owner_id: str) -> Room:
        doc = {
            "_id": str(ObjectId()),
            "name": name,
            "private": private,
            "ownerId": owner_id,
            "members": [owner_id],
            "createdAt": datetime.now(UTC),
        }
        await self._rooms.insert_one(doc)
        await self._counters.insert_one({"_id": doc["_id"], "seq": 0})
        return _room(doc)

    async def room(self, room_id: str) -> Room | None:
        doc = await self._rooms.find_one({"_id": room_id}, _ROOM_FIELDS)
        return None if doc is None else _room(doc)

    async def is_member(self, room_id: str, user_id: str) -> bool:
        return (
            await self._rooms.find_one({"_id": room_id, "members": user_id}, {"_id": 1}) is not None
        )

    async def add_member(self, room_id: str, user_id: str) -> None:
        await self._rooms.update_one({"_id": room_id}, {"$addToSet": {"members": user_id}})

    async def visible_rooms(
        self, user_id: str, page_size: int, after_id: str | None
    ) -> tuple[list[Room], str | None]:
        """Rooms `user_id` is a member of and public ones, by creation; and the last id."""
        query: dict[str, Any] = {"$or": [{"private": False}, {"members": user_id}]}
        if after_id is not None:
            query["_id"] = {"$gt": after_id}
        cursor = self._rooms.find(query, _ROOM_FIELDS).sort("_id", ASCENDING).limit(page_size + 1)
        rooms = [_room(doc) async for doc in cursor]
        more = len(rooms) > page_size
        rooms = rooms[:page_size]
        return rooms, rooms[-1].id if more else None

    # Messages.

    async def allocate_seq(self, room_id: str) -> int:
        """The room's next seq (the counter is made with the room; upserts race)."""
        for _ in range(2):
            doc = await self._counters.find_one_and_update(
                {"_id": room_id}, {"$inc": {"seq": 1}}, return_document=ReturnDocument.AFTER
            )
            if doc is not None:
                return int(doc["seq"])
            with contextlib.suppress(DuplicateKeyError):
                await self._counters.update_one(
                    {"_id": room_id}, {"$setOnInsert": {"seq": 0}}, upsert=True
                )
        raise RuntimeError(f"no seq counter for room {room_id}")

    async def insert_message(self, message: StoredMessage) -> bool:
        """Store `message`; False when its (room, userId, clientMsgId) is already stored."""
        try:
            await self._messages.insert_one(
                {
                    "_id": message.id,
                    "room": message.room,
                    "seq": message.seq,
                    "userId": message.user_id,
                    "clientMsgId": message.client_msg_id,
                    "text": message.text,
                    "ts": message.ts,
                }
            )
        except DuplicateKeyError:
            return False
        return True

    async def insert_hole(self, room_id: str, seq: int) -> None:
        """Record that `seq` of `room_id` will never hold a message."""
        with contextlib.suppress(DuplicateKeyError):
            await self._messages.insert_one(
                {
                    "_id": str(ObjectId()),
                    "room": room_id,
                    "seq": seq,
                    "userId": HOLE_USER,
                    "clientMsgId": f"hole:{seq}",
                    "hole": True,
                }
            )

    async def by_client_msg_id(
        self, room_id: str, user_id: str, client_msg_id: str
    ) -> StoredMessage | None:
        doc = await self._messages.find_one(
            {"room": room_id, "userId": user_id, "clientMsgId": client_msg_id}
        )
        return None if doc is None else _message(doc)

    async def after(self, room_id: str, since: int, upto: int, limit: int) -> list[StoredMessage]:
        """Messages with since < seq <= upto, oldest first, at most `limit`."""
        cursor = (
            self._messages.find({"room": room_id, "seq": {"$gt": since, "$lte": upto}, **_NOT_HOLE})
            .sort("seq", ASCENDING)
            .limit(limit)
        )
        return [_message(doc) async for doc in cursor]

    async def before(self, room_id: str, before: int | None, limit: int) -> list[StoredMessage]:
        """Messages with seq < before (all when None), newest first, at most `limit`."""
        query: dict[str, Any] = {"room": room_id, **_NOT_HOLE}
        if before is not None:
            query["seq"] = {"$lt": before}
        cursor = self._messages.find(query).sort("seq", DESCENDING).limit(limit)
        return [_message(doc) async for doc in cursor]

    async def window(self, room_id: str, after: int, upto: int, limit: int) -> list[WindowEntry]:
        """Every seq in (after, upto] that is stored, messages and holes, oldest first."""
        cursor = (
            self._messages.find({"room": room_id, "seq": {"$gt": after, "$lte": upto}})
            .sort("seq", ASCENDING)
            .limit(limit)
        )
        return [
            WindowEntry(doc["seq"], None if doc.get("hole") else _message(doc))
            async for doc in cursor
        ]

    async def stored_seqs(self, room_id: str, after: int) -> set[int]:
        cursor = self._messages.find({"room": room_id, "seq": {"$gt": after}}, {"seq": 1, "_id": 0})
        return {doc["seq"] async for doc in cursor}

    async def counters(self, room_ids: Sequence[str]) -> dict[str, int]:
        """The last allocated seq of each room (rooms that never had a message are absent)."""
        if not room_ids:
            return {}
        cursor = self._counters.find({"_id": {"$in": list(room_ids)}})
        return {doc["_id"]: int(doc["seq"]) async for doc in cursor}
