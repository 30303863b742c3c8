"""GatewaySettings.from_env: defaults from the topology, overrides, failing fast."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.policy import PolicyTable
from gateway.settings import GatewaySettings, default_workers
from mesh.settings import Env, SettingsError


def test_defaults() -> None:
    settings = GatewaySettings.from_env(Env({}))
    # From the environment: the shipped policy file and one worker per core; built in code
    # (tests, embedding): no policies and one worker. Everything else is the same.
    assert dataclasses.replace(settings, policies=PolicyTable(), workers=1) == GatewaySettings()
    assert settings.workers == default_workers() >= 1
    assert settings.policies.group_names == ("auth", "ingest", "general")
    assert (settings.host, settings.port, settings.ops_port) == ("127.0.0.1", 8080, 9100)
    assert settings.users_addresses == ("127.0.0.1:50051",)
    assert settings.catalog_addresses == ("127.0.0.1:50052",)
    assert settings.analytics_addresses == ("127.0.0.1:50053",)
    assert settings.chat_urls == ("http://127.0.0.1:8081",)
    assert settings.body_limit_bytes == 1024 * 1024
    assert settings.upstream_timeout_seconds == 5.0
    assert settings.channels_per_upstream == 2
    assert settings.service_name == "gateway"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


def test_overrides() -> None:
    settings = GatewaySettings.from_env(
        Env(
            {
                "MESH_HOST": "0.0.0.0",
                "MESH_GATEWAY_PORT": "8000",
                "MESH_GATEWAY_OPS_PORT": "9000",
                "MESH_CATALOG_ADDR": "10.0.0.1:7000, 10.0.0.2:7000",
                "MESH_CHAT_URL": "http://chat-a:8081/, https://chat-b",
                "MESH_GATEWAY_BODY_LIMIT_BYTES": "2048",
                "MESH_GATEWAY_UPSTREAM_TIMEOUT_SECONDS": "0.25",
                "MESH_GATEWAY_CHANNELS_PER_UPSTREAM": "4",
            }
        )
    )
    assert (settings.host, settings.port, settings.ops_port) == ("0.0.0.0", 8000, 9000)
    assert settings.catalog_addresses == ("10.0.0.1:7000", "10.0.0.2:7000")
    assert settings.grpc_addresses("catalog") == ("10.0.0.1:7000", "10.0.0.2:7000")
    assert settings.chat_urls == ("http://chat-a:8081", "https://chat-b")
    assert settings.body_limit_bytes == 2048
    assert settings.upstream_timeout_seconds == 0.25
    assert settings.channels_per_upstream == 4


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MESH_GATEWAY_PORT", "http"),
        ("MESH_USERS_ADDR", "users"),
        ("MESH_CHAT_URL", "ftp://chat"),
        ("MESH_CHAT_URL", "http://"),
        ("MESH_CHAT_URL", "http://chat:99999"),
        ("MESH_GATEWAY_BODY_LIMIT_BYTES", "0"),
        ("MESH_GATEWAY_UPSTREAM_TIMEOUT_SECONDS", "soon"),
        ("MESH_GATEWAY_CHANNELS_PER_UPSTREAM", "0"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        GatewaySettings.from_env(Env({variable: value}))
    assert raised.value.variable == variable


def test_unknown_grpc_upstream() -> None:
    with pytest.raises(ValueError, match="chat"):
        GatewaySettings().grpc_addresses("chat")
