"""Analytics settings from the environment: defaults, and the variable named on a bad value."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mesh.settings import Env, SettingsError
from services.analytics.settings import AnalyticsSettings


def test_defaults() -> None:
    settings = AnalyticsSettings.from_env(Env({}))
    assert settings.max_range_days == 400
    assert settings.limits.max_minute_range == timedelta(days=7)
    assert settings.query_timeout_seconds == 30.0
    assert settings.consume_events is True
    assert settings.claim_idle_seconds == 60.0


def test_values_are_read() -> None:
    settings = AnalyticsSettings.from_env(
        Env(
            {
                "MESH_ANALYTICS_MAX_RANGE_DAYS": "90",
                "MESH_ANALYTICS_MAX_MINUTE_RANGE_DAYS": "2",
                "MESH_ANALYTICS_CONSUME_EVENTS": "false",
                "MESH_ANALYTICS_CLAIM_IDLE_SECONDS": "15",
                "MESH_ANALYTICS_QUERY_TIMEOUT_SECONDS": "5",
            }
        )
    )
    assert settings.limits.max_range == timedelta(days=90)
    assert settings.consume_events is False
    assert settings.claim_idle_seconds == 15.0
    assert settings.query_timeout_seconds == 5.0


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MESH_ANALYTICS_MAX_RANGE_DAYS": "0"}, "MESH_ANALYTICS_MAX_RANGE_DAYS"),
        (
            {"MESH_ANALYTICS_MAX_RANGE_DAYS": "5", "MESH_ANALYTICS_MAX_MINUTE_RANGE_DAYS": "6"},
            "MESH_ANALYTICS_MAX_MINUTE_RANGE_DAYS",
        ),
        ({"MESH_ANALYTICS_CONSUME_EVENTS": "maybe"}, "MESH_ANALYTICS_CONSUME_EVENTS"),
        ({"MESH_ANALYTICS_CLAIM_IDLE_SECONDS": "0"}, "MESH_ANALYTICS_CLAIM_IDLE_SECONDS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        AnalyticsSettings.from_env(Env(env))
    assert caught.value.variable == variable
