from __future__ import annotations

import pytest

from mesh.backing_settings import StoreUrls
from mesh.common import CommonSettings
from mesh.settings import Env, Secret, SettingsError, redact_url, with_database
from mesh.topology import PROCESSES, USERS


@pytest.mark.parametrize("value", ["abc", "0", "65536", "-1", "80.5", "8o8o"])
def test_a_bad_port_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        CommonSettings.from_env(Env({"MESH_USERS_PORT": value}), USERS)
    assert caught.value.variable == "MESH_USERS_PORT"
    assert str(caught.value).startswith("MESH_USERS_PORT: ")
    assert "\n" not in str(caught.value)


def test_defaults_follow_the_topology_table() -> None:
    for spec in PROCESSES:
        settings = CommonSettings.from_env(Env({}), spec)
        assert (settings.port, settings.ops_port) == (spec.port, spec.ops_port)
    assert [p.port for p in PROCESSES] == [50051, 50052, 50053, 8081, 8080]
    assert [p.ops_port for p in PROCESSES] == [9101, 9102, 9103, 9104, 9100]


def test_urls_are_checked_and_passwords_never_shown() -> None:
    env = Env({"MESH_POSTGRES_DSN": "mysql://root:hunter2@db/x"})
    with pytest.raises(SettingsError) as caught:
        StoreUrls.from_env(env)
    assert "MESH_POSTGRES_DSN" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert redact_url("postgresql://u:hunter2@h:5/db") == "postgresql://u:***@h:5/db"
    assert "hunter2" not in repr(Secret("hunter2"))


def test_each_service_gets_its_own_database_in_the_namespace() -> None:
    stores = StoreUrls.from_env(
        Env({"MESH_POSTGRES_DSN": "postgresql://p@h:1/postgres", "MESH_NAMESPACE": "dev_"})
    )
    assert stores.postgres_for("users") == "postgresql://p@h:1/dev_users"
    assert with_database("postgresql://p@h:1/postgres?sslmode=require", "x") == (
        "postgresql://p@h:1/x?sslmode=require"
    )


@pytest.mark.parametrize("namespace", ["Dev", "a-b", "1x", "x;drop"])
def test_bad_namespace_is_refused(namespace: str) -> None:
    with pytest.raises(SettingsError, match="MESH_NAMESPACE"):
        StoreUrls.from_env(Env({"MESH_NAMESPACE": namespace}))


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("off", False), ("TRUE", True)])
def test_booleans(raw: str, expected: bool) -> None:
    assert Env({"X": raw}).bool("X", not expected) is expected


def test_addresses_list() -> None:
    env = Env({"A": "10.0.0.1:1, h:2", "B": "nohost"})
    assert env.addresses("A", "x:1") == ("10.0.0.1:1", "h:2")
    with pytest.raises(SettingsError, match="B"):
        env.addresses("B", "x:1")
