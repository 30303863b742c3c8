"""Route policies from TOML: the shipped file, and malformed files failing start-up in one
line that names MESH_GATEWAY_POLICIES."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy import CHAT_HTTP, DEFAULT_POLICY_FILE, POLICIES_VAR, PolicyTable, RateLimit
from gateway.settings import GatewaySettings
from mesh.settings import Env, SettingsError


def test_the_shipped_policies() -> None:
    settings = GatewaySettings(policies=PolicyTable.load(DEFAULT_POLICY_FILE))
    login = settings.route_policy("users.v1.UsersService.Login")
    assert login.rate_limit == RateLimit("auth", 10, 60.0, 10, key="address")
    ingest = settings.route_policy("analytics.v1.AnalyticsService.IngestEvents")
    assert ingest.rate_limit == RateLimit("ingest", 1000, 1.0, 2000, cost="events")
    for name in ("catalog.v1.CatalogService.GetProduct", CHAT_HTTP):
        assert settings.route_policy(name).rate_limit == RateLimit("general", 100, 1.0, 200)
    assert GatewaySettings().route_policy(CHAT_HTTP).rate_limit is None  # no file: no limits


MALFORMED = {
    "not TOML": ("[[group]\nname = 'x'", "not valid TOML"),
    "a typo in a group": (
        "[[group]]\nname = 'a'\nroutes = ['*']\nlimits = 3",
        "unknown key(s) limits",
    ),
    "a zero limit": (
        "[[group]]\nname = 'a'\nroutes = ['*']\nrate = { limit = 0, window_seconds = 1 }",
        "a.rate.limit must be a whole number >= 1, got 0",
    ),
    "no window": (
        "[[group]]\nname = 'a'\nroutes = ['*']\nrate = { limit = 5 }",
        "a.rate.window_seconds must be a number > 0, got None",
    ),
    "an unknown key kind": (
        "[[group]]\nname = 'a'\nroutes = ['*']\n"
        "rate = { limit = 5, window_seconds = 1, key = 'ip' }",
        "a.rate.key must be 'user' or 'address', got 'ip'",
    ),
    "a fractional burst": (
        "[[group]]\nname = 'a'\nroutes = ['*']\n"
        "rate = { limit = 5, window_seconds = 1, burst = 2.5 }",
        "a.rate.burst must be a whole number >= 1, got 2.5",
    ),
    "a group twice": (
        "[[group]]\nname = 'a'\nroutes = ['*']\n[[group]]\nname = 'a'\nroutes = ['x']",
        "group 'a' is defined twice",
    ),
    "a name that cannot go in a header": (
        "[[group]]\nname = 'général'\nroutes = ['*']",
        "name must be an ASCII word",
    ),
    "routes as a string": ("[[group]]\nname = 'a'\nroutes = '*'", "routes must be a list"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_file_fails_in_one_line_naming_the_variable(tmp_path: Path, case: str) -> None:
    text, expected = MALFORMED[case]
    path = tmp_path / "policies.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        GatewaySettings.from_env(Env({POLICIES_VAR: str(path)}))
    message = str(caught.value)
    assert caught.value.variable == POLICIES_VAR
    assert message.startswith(f"{POLICIES_VAR}: ")
    assert "\n" not in message
    assert expected in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(SettingsError, match=f"^{POLICIES_VAR}: cannot read {missing}"):
        PolicyTable.load(missing)
