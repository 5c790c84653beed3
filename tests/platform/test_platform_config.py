"""Settings: precedence of the sources, validation, and the README's table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from convergio_server.config import Settings, SettingsError, load_settings
from pydantic import ValidationError

README = Path(__file__).resolve().parents[2] / "README.md"


def _env_name(name: str) -> str:
    return name.upper() if name in ("database_url", "redis_url") else f"CONVERGIO_{name.upper()}"


def test_readme_documents_every_setting() -> None:
    table = README.read_text()
    missing = [
        _env_name(name)
        for name in Settings.model_fields
        if not re.search(rf"\|\s*`{_env_name(name)}`\s*\|", table)
    ]
    assert not missing, f"README.md settings table lacks: {missing}"


def test_precedence_flags_over_env_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "convergio.toml"
    config.write_text('listen = "0.0.0.0:7000"\nlog_level = "DEBUG"\nredis_prefix = "fromfile"\n')
    monkeypatch.setenv("CONVERGIO_LOG_LEVEL", "ERROR")
    monkeypatch.setenv("DATABASE_URL", "postgresql://env/db")
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings = load_settings({"listen": "127.0.0.1:7001"}, config)
    assert settings.listen == "127.0.0.1:7001"  # flag beats file
    assert settings.log_level == "ERROR"  # environment beats file
    assert settings.redis_prefix == "fromfile"  # file beats default
    assert settings.database_url == "postgresql://env/db"
    assert not settings.embedded_postgres and settings.embedded_redis


def test_unknown_file_setting_is_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("lisen = '1.2.3.4:5'\n")
    with pytest.raises(ValueError, match="lisen"):
        load_settings(None, config)


@pytest.mark.parametrize(
    ("field", "value"),
    [("listen", "nohost"), ("db_pool_max", 0), ("log_level", "LOUD"), ("max_message_bytes", 1)],
)
def test_invalid_values_are_rejected(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**{field: value})
    assert field in str(caught.value)


@pytest.mark.parametrize(
    ("line", "key", "kind"),
    [
        ("listen = 51107", "listen", "an integer"),
        ("metrics_listen = 9090", "metrics_listen", "an integer"),
        ('db_pool_max = "ten"', "db_pool_max", "a string"),
        ('bootstrap_dev_key = "maybe"', "bootstrap_dev_key", "a string"),
        ("model_timeout_seconds = [60]", "model_timeout_seconds", "an array"),
        ('log_level = { level = "INFO" }', "log_level", "a table"),
        ("database_url = 5432", "database_url", "an integer"),
        ("redis_url = true", "redis_url", "a boolean"),
        ("flags_file = 1979-05-27", "flags_file", "a date or time"),
    ],
)
def test_a_bad_value_in_the_file_is_named_by_its_key_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, key: str, kind: str
) -> None:
    """The operator has to fix the file, not an environment variable they never set."""
    for name in (f"CONVERGIO_{key.upper()}", key.upper()):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "convergio.toml"
    config.write_text(line + "\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(None, config)
    message = str(caught.value)
    assert message.startswith(f"invalid settings: {key} (in {config}, where it is {kind}): ")
    assert "CONVERGIO_" not in message and key.upper() not in message


def test_a_bad_file_value_is_not_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVERGIO_OPENAI_API_KEY", raising=False)
    config = tmp_path / "convergio.toml"
    config.write_text("openai_api_key = 7355608\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(None, config)
    assert "openai_api_key (in " in str(caught.value) and "7355608" not in str(caught.value)


def test_bad_values_elsewhere_are_named_where_they_were_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "convergio.toml"
    config.write_text('listen = "127.0.0.1:7000"\ndb_pool_max = 5\n')
    # The environment beats the file: its value is the one refused, under its own name.
    monkeypatch.setenv("CONVERGIO_DB_POOL_MAX", "five")
    with pytest.raises(SettingsError) as caught:
        load_settings(None, config)
    assert "db_pool_max (CONVERGIO_DB_POOL_MAX): " in str(caught.value)
    assert str(config) not in str(caught.value)
    monkeypatch.delenv("CONVERGIO_DB_POOL_MAX")
    # A command-line flag beats both.
    with pytest.raises(SettingsError) as caught:
        load_settings({"listen": "nohost"}, config)
    assert "listen (--listen): " in str(caught.value)
