"""gateway.body: which media types count as JSON (the reading itself is tested end to end)."""

from __future__ import annotations

import pytest

from gateway.body import is_json_media_type


@pytest.mark.parametrize(
    ("media_type", "is_json"),
    [
        ("application/json", True),
        ("Application/JSON", True),
        ("application/merge-patch+json", True),
        ("application/problem+json", True),
        ("text/json", False),
        ("application/x-www-form-urlencoded", False),
        ("application/octet-stream", False),
        ("text/plain", False),
        ("", False),
    ],
)
def test_json_media_types(media_type: str, is_json: bool) -> None:
    assert is_json_media_type(media_type) is is_json
