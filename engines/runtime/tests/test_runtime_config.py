"""Start-up settings from the environment (§6): exact flag spelling, errors naming the variable.

``ENGINES_ALLOW_TEST_BACKENDS=1`` is the only way test-only backends are built, so the flag takes
exactly ``1`` (on) or ``0``/unset (off); any other spelling is a start-up error naming the variable
rather than a guess. A check across settings (files source with no directory) names the variables
it is about, never a bare ``ENGINES_``. The admin port and the limits default to safe values and
refuse anything but an integer in range. Real environment variables through ``monkeypatch``.
"""

from __future__ import annotations

import pytest

from engines.config.runtime_config import RuntimeConfigError, load_runtime_config


@pytest.fixture(autouse=True)
def base_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "ENGINES_ALLOW_TEST_BACKENDS",
        "ENGINES_STRICT_STARTUP",
        "ENGINES_ROUTING_DIR",
        "ENGINES_ROUTING_SOURCE",
        "ENGINES_PROJECT",
        "ENGINES_ADMIN_PORT",
        "ENGINES_MAX_BODY_BYTES",
        "ENGINES_MAX_SSE_SUBSCRIBERS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ENGINES_ENV", "prod")
    monkeypatch.setenv("ENGINES_TENANTS", "acme")


@pytest.mark.parametrize("var", ["ENGINES_ALLOW_TEST_BACKENDS", "ENGINES_STRICT_STARTUP"])
def test_flag_is_one_or_zero(monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    field = var.removeprefix("ENGINES_").lower()
    assert getattr(load_runtime_config(), field) is False  # unset: off
    monkeypatch.setenv(var, "1")
    assert getattr(load_runtime_config(), field) is True
    monkeypatch.setenv(var, "0")
    assert getattr(load_runtime_config(), field) is False


@pytest.mark.parametrize("value", ["true", "yes", "on", "True", "2", "", " 1", "off", "false"])
def test_any_other_flag_spelling_is_a_startup_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ENGINES_ALLOW_TEST_BACKENDS", value)
    with pytest.raises(RuntimeConfigError) as info:
        load_runtime_config()
    message = str(info.value)
    assert f"ENGINES_ALLOW_TEST_BACKENDS: must be 1 (on) or 0 (off), got {value!r}" in message


def test_files_source_without_a_directory_names_both_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENGINES_ROUTING_SOURCE", "files")
    monkeypatch.setenv("ENGINES_ROUTING_DIR", " , ")
    with pytest.raises(RuntimeConfigError) as info:
        load_runtime_config()
    message = str(info.value)
    assert "ENGINES_ROUTING_DIR" in message and "ENGINES_ROUTING_SOURCE=files" in message
    assert "ENGINES_:" not in message and "ENGINES_ " not in message


def test_field_errors_still_name_their_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGINES_ENV")
    monkeypatch.setenv("ENGINES_TENANTS", "Acme")
    with pytest.raises(RuntimeConfigError) as info:
        load_runtime_config()
    assert "ENGINES_ENV is required but not set" in str(info.value)
    assert "ENGINES_TENANTS: tenants must be DNS labels" in str(info.value)


def test_limits_and_admin_port_have_safe_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_runtime_config()
    assert config.admin_port is None  # /routing and /metrics stay on the app port
    assert config.max_body_bytes == 8388608 and config.max_sse_subscribers == 256
    monkeypatch.setenv("ENGINES_ADMIN_PORT", "9091")
    monkeypatch.setenv("ENGINES_MAX_BODY_BYTES", "1024")
    monkeypatch.setenv("ENGINES_MAX_SSE_SUBSCRIBERS", "3")
    config = load_runtime_config()
    assert (config.admin_port, config.max_body_bytes, config.max_sse_subscribers) == (9091, 1024, 3)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("ENGINES_ADMIN_PORT", "", "ENGINES_ADMIN_PORT: Input should be a valid integer"),
        ("ENGINES_ADMIN_PORT", "0", "ENGINES_ADMIN_PORT: Input should be greater than or equal"),
        ("ENGINES_ADMIN_PORT", "65536", "ENGINES_ADMIN_PORT: Input should be less than or equal"),
        ("ENGINES_MAX_BODY_BYTES", "8MiB", "ENGINES_MAX_BODY_BYTES: Input should be a valid int"),
        ("ENGINES_MAX_BODY_BYTES", "0", "ENGINES_MAX_BODY_BYTES: Input should be greater than"),
        ("ENGINES_MAX_SSE_SUBSCRIBERS", "0", "ENGINES_MAX_SSE_SUBSCRIBERS: Input should be"),
    ],
)
def test_a_malformed_limit_is_a_startup_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(RuntimeConfigError, match=message):
        load_runtime_config()
