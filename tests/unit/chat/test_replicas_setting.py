"""`mesh up` with MESH_CHAT_REPLICAS: one endpoint per replica, the gateway told of all."""

from __future__ import annotations

import pytest

from mesh.settings import Env, SettingsError
from mesh.supervisor import Supervisor, UpSettings


def chat_endpoints(env: dict[str, str]) -> list[tuple[str, int, int]]:
    settings = UpSettings.from_env(Env(env))
    return [(e.name, e.port, e.ops_port) for e in settings.endpoints if e.spec.name == "chat"]


def test_one_chat_by_default() -> None:
    assert chat_endpoints({}) == [("chat", 8081, 9104)]


def test_replicas_on_consecutive_ports_or_listed_ones() -> None:
    assert chat_endpoints({"MESH_CHAT_REPLICAS": "2", "MESH_CHAT_PORT": "7000"}) == [
        ("chat-1", 7000, 9104),
        ("chat-2", 7001, 9105),
    ]
    listed = {"MESH_CHAT_PORTS": "7100,7200", "MESH_CHAT_OPS_PORTS": "9300,9400"}
    assert chat_endpoints(listed) == [("chat-1", 7100, 9300), ("chat-2", 7200, 9400)]
    settings = UpSettings.from_env(Env({"MESH_CHAT_REPLICAS": "2"}))
    urls = Supervisor(settings)._upstream_addresses()["MESH_CHAT_URL"]
    assert urls == "http://127.0.0.1:8081,http://127.0.0.1:8082"
    second = next(e for e in settings.endpoints if e.name == "chat-2")
    assert second.child_env() == {"MESH_CHAT_PORT": "8082", "MESH_CHAT_OPS_PORT": "9105"}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MESH_CHAT_REPLICAS": "0"}, "MESH_CHAT_REPLICAS"),
        ({"MESH_CHAT_REPLICAS": "17"}, "MESH_CHAT_REPLICAS"),
        ({"MESH_CHAT_REPLICAS": "3", "MESH_CHAT_PORTS": "1,2"}, "MESH_CHAT_PORTS"),
        ({"MESH_CHAT_PORTS": "80,x"}, "MESH_CHAT_PORTS"),
        ({"MESH_CHAT_REPLICAS": "2", "MESH_CHAT_PORT": "65535"}, "MESH_CHAT_REPLICAS"),
    ],
)
def test_bad_replica_settings(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as error:
        UpSettings.from_env(Env(env))
    assert error.value.variable == variable
