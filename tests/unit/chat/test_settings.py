"""ChatSettings from the environment."""

from __future__ import annotations

import pytest

from mesh.settings import Env, SettingsError
from services.chat.settings import ChatSettings


def test_defaults_are_the_issue_limits() -> None:
    settings = ChatSettings.from_env(Env({}))
    assert settings.max_frame_bytes == 64 * 1024
    assert (settings.ping_seconds, settings.idle_timeout_seconds) == (25.0, 60.0)
    assert settings.max_text_chars == 4000
    assert (settings.rate_per_second, settings.rate_burst) == (10.0, 20)
    assert settings.max_connections_per_user == 5
    assert settings.replay_limit == 1000
    assert settings.typing_interval_seconds == 3.0
    assert settings == ChatSettings(stores=settings.stores)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MESH_CHAT_MAX_FRAME_BYTES", "10"),
        ("MESH_CHAT_RATE_BURST", "0"),
        ("MESH_CHAT_HEARTBEAT_SECONDS", "soon"),
        ("MESH_CHAT_REPLAY_LIMIT", "0"),
        ("MESH_ALLOWED_ORIGINS", "example.org"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        ChatSettings.from_env(Env({variable: value}))
    assert error.value.variable == variable
