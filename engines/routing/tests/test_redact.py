"""The one redaction helper every human-facing rendering of settings goes through.

The model refuses credentials in settings; this is the second lock for whatever reaches a human
anyway (an old document, a hand edit): userinfo and credential query parameters are masked, a
percent-encoded parameter name masks the whole query, everything else is kept byte for byte.
"""

from __future__ import annotations

import pytest

from engines.routing.redact import MASK, redact, redact_url

SECRET = "hunter2"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://app:{SECRET}@h:6379/0", f"redis://{MASK}@h:6379/0"),
        (f"redis://{SECRET}@h:6379/0", f"redis://{MASK}@h:6379/0"),
        (f"redis://h:6379/0?db=1&PassWord={SECRET}", f"redis://h:6379/0?db=1&PassWord={MASK}"),
        (f"redis://h/0?username={SECRET}", f"redis://h/0?username={MASK}"),
        (f"redis://h/0?pass%77ord={SECRET}", f"redis://h/0?{MASK}"),
    ],
)
def test_credentials_in_a_url_are_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert SECRET not in redact_url(url)


@pytest.mark.parametrize(
    "value",
    ["redis://h:6379/0", "unix:///run/redis.sock?db=2", "rediss://h/0?ssl_cert_reqs=none", "seo"],
)
def test_a_clean_value_is_kept_byte_for_byte(value: str) -> None:
    assert redact_url(value) == value


def test_nested_settings_and_credential_keys_are_masked() -> None:
    config = {
        "url": f"redis://:{SECRET}@h/0",
        "nested": [{"token": SECRET}, "plain"],
        "key_prefix": "p:",
    }
    assert redact(config) == {
        "url": f"redis://{MASK}@h/0",
        "nested": [{"token": MASK}, "plain"],
        "key_prefix": "p:",
    }
