"""The chat REST API against a real chat process: rooms, members, history."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mesh.harness import BackingUrls
from tests.integration.services.chat_support import Chat, ChatEnv, chat_env, client, rest


@pytest.fixture(scope="module")
async def env(backing: BackingUrls) -> AsyncIterator[ChatEnv]:
    async with chat_env(backing) as env:
        yield env


@pytest.fixture(scope="module")
async def chat(env: ChatEnv) -> AsyncIterator[Chat]:
    async with env.chat() as chat:
        yield chat


def rooms_url(chat: Chat, tail: str = "") -> str:
    return f"{chat.http}/api/v1/chat/rooms{tail}"


async def test_create_a_room(env: ChatEnv, chat: Chat) -> None:
    owner, token = env.user()
    status, room = await rest("POST", rooms_url(chat), token, {"name": "  Lobby ", "private": True})
    assert status == 201
    assert set(room) == {"id", "name", "private", "ownerId", "createdAt"}
    assert (room["name"], room["private"], room["ownerId"]) == ("Lobby", True, owner)
    assert room["createdAt"].endswith("Z")
    status, room = await rest("POST", rooms_url(chat), token, {"name": "Open"})
    assert (status, room["private"]) == (201, False)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["name"]),
        ({"name": "   "}, ["name"]),
        ({"name": "x" * 101}, ["name"]),
        ({"name": "ok", "private": "yes"}, ["private"]),
        ({"name": 5, "private": 1}, ["name", "private"]),
        ({"name": "ok", "owner": "me"}, ["owner"]),
    ],
)
async def test_an_invalid_room_is_a_400_naming_the_fields(
    env: ChatEnv, chat: Chat, body: dict[str, object], fields: list[str]
) -> None:
    _, token = env.user()
    status, problem = await rest("POST", rooms_url(chat), token, body)
    assert status == 400
    assert [e["field"] for e in problem["errors"]] == fields


async def test_only_signed_in_users(env: ChatEnv, chat: Chat) -> None:
    for token in (None, "not-a-token"):
        status, problem = await rest("GET", rooms_url(chat), token)
        assert (status, problem["status"]) == (401, 401)
    status, _ = await rest("POST", rooms_url(chat), None, {"name": "x"})
    assert status == 401


async def test_rooms_listed_are_the_callers_and_the_public_ones_paged(
    env: ChatEnv, chat: Chat
) -> None:
    me, token = env.user()
    _, other = env.user()
    mine_private = (await rest("POST", rooms_url(chat), token, {"name": "a", "private": True}))[1]
    others_private = (await rest("POST", rooms_url(chat), other, {"name": "b", "private": True}))[1]
    public = (await rest("POST", rooms_url(chat), other, {"name": "c"}))[1]
    added = (await rest("POST", rooms_url(chat), other, {"name": "d", "private": True}))[1]
    status, _ = await rest(
        "POST", rooms_url(chat, f"/{added['id']}/members"), other, {"userId": me}
    )
    assert status == 200
    seen: list[str] = []
    page_token: str | None = None
    while True:
        params = {"pageSize": "2", **({"pageToken": page_token} if page_token else {})}
        status, page = await rest("GET", rooms_url(chat), token, params=params)
        assert status == 200
        assert len(page["rooms"]) <= 2
        seen += [room["id"] for room in page["rooms"]]
        page_token = page.get("nextPageToken")
        if page_token is None:
            break
    assert mine_private["id"] in seen
    assert public["id"] in seen
    assert added["id"] in seen
    assert others_private["id"] not in seen
    assert seen == sorted(seen)  # creation order, no repeats
    status, problem = await rest("GET", rooms_url(chat), token, params={"pageToken": "%%%"})
    assert status == 400
    status, problem = await rest("GET", rooms_url(chat), token, params={"pageSize": "101"})
    assert (status, problem["errors"][0]["field"]) == (400, "pageSize")


async def test_only_the_owner_adds_members(env: ChatEnv, chat: Chat) -> None:
    _, owner = env.user()
    stranger_id, stranger = env.user()
    room = (await rest("POST", rooms_url(chat), owner, {"name": "p", "private": True}))[1]["id"]
    url = rooms_url(chat, f"/{room}/members")
    status, problem = await rest("POST", url, stranger, {"userId": stranger_id})
    assert status == 403
    status, problem = await rest("POST", url, owner, {})
    assert (status, problem["errors"][0]["field"]) == (400, "userId")
    status, _ = await rest("POST", rooms_url(chat, "/nope/members"), owner, {"userId": "u"})
    assert status == 404
    status, body = await rest("POST", url, owner, {"userId": stranger_id})
    assert (status, body) == (200, {"roomId": room, "userId": stranger_id})
    # Anyone may add themselves to a public room.
    public = (await rest("POST", rooms_url(chat), owner, {"name": "pub"}))[1]["id"]
    status, _ = await rest(
        "POST", rooms_url(chat, f"/{public}/members"), stranger, {"userId": stranger_id}
    )
    assert status == 200


async def test_history_is_newest_first_paged_by_seq_for_members_only(
    env: ChatEnv, chat: Chat
) -> None:
    _, token = env.user()
    _, stranger = env.user()
    room = (await rest("POST", rooms_url(chat), token, {"name": "h", "private": True}))[1]["id"]
    async with client(chat.ws, token) as c:
        for i in range(7):
            await c.say(room, f"m{i}")
    url = rooms_url(chat, f"/{room}/messages")
    status, page = await rest("GET", url, token, params={"limit": "3"})
    assert status == 200
    assert [m["seq"] for m in page["messages"]] == [7, 6, 5]
    assert page["nextBefore"] == 5
    assert set(page["messages"][0]) == {"room", "seq", "id", "userId", "text", "ts", "clientMsgId"}
    status, page = await rest("GET", url, token, params={"limit": "3", "before": "5"})
    assert [m["text"] for m in page["messages"]] == ["m3", "m2", "m1"]
    status, page = await rest("GET", url, token, params={"before": "2"})
    assert ([m["seq"] for m in page["messages"]], page.get("nextBefore")) == ([1], None)
    status, _ = await rest("GET", url, stranger)
    assert status == 403
    status, _ = await rest("GET", rooms_url(chat, "/missing/messages"), token)
    assert status == 404
    for params in ({"limit": "0"}, {"limit": "101"}, {"before": "x"}):
        status, _problem = await rest("GET", url, token, params=params)
        assert status == 400, params


@pytest.mark.parametrize("value", ["", "²", "٣", "-1", " 5", "9" * 5000])
async def test_a_query_number_that_is_not_plain_ascii_digits_is_a_400(
    env: ChatEnv, chat: Chat, value: str
) -> None:
    """Found by fuzzing: "" meant the default, "²" and 5000 digits were a 500 (int() refuses
    what str.isdigit() accepts)."""
    _, token = env.user()
    status, problem = await rest("GET", rooms_url(chat), token, params={"pageSize": value})
    assert (status, problem["errors"][0]["field"]) == (400, "pageSize")
