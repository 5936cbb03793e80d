"""Settings from the environment, and the two log formats."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from gefyra_async.core.logging import configure_logging
from gefyra_async.core.settings import Settings


def test_defaults_and_environment_overrides() -> None:
    settings = Settings.from_env(
        {"GEFYRA_ASYNC_TUNNEL_PORT": "31999", "GEFYRA_ASYNC_RESYNC_PERIOD": "2.5", "OTHER": "x"}
    )
    assert settings.tunnel_port == 31999
    assert settings.resync_period == 2.5
    assert settings.namespace == Settings().namespace


def test_bad_value_names_the_variable_and_its_meaning() -> None:
    with pytest.raises(ValueError, match=r"GEFYRA_ASYNC_TUNNEL_PORT='udp' is not a valid int"):
        Settings.from_env({"GEFYRA_ASYNC_TUNNEL_PORT": "udp"})


def test_every_setting_is_documented() -> None:
    described = Settings.describe()
    assert len(described) >= 10
    assert all(doc.strip() for _, _, doc in described)


def test_json_logs_when_not_a_terminal() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    try:
        structlog.get_logger("t").info("tunnel up", interface="wg0")
        record = json.loads(out.getvalue())
        assert record["event"] == "tunnel up"
        assert record["interface"] == "wg0"
        assert record["level"] == "info"
        assert "timestamp" in record
    finally:
        structlog.reset_defaults()


def test_debug_messages_only_with_debug() -> None:
    quiet, loud = io.StringIO(), io.StringIO()
    try:
        configure_logging(stream=quiet, json=True)
        structlog.get_logger("t").debug("detail")
        configure_logging(stream=loud, json=True, debug=True)
        structlog.get_logger("t").debug("detail")
    finally:
        structlog.reset_defaults()
    assert quiet.getvalue() == ""
    assert json.loads(loud.getvalue())["event"] == "detail"
