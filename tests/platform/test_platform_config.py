"""Settings: precedence of the sources, validation, and the README's table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from convergio_server.config import Settings, load_settings
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
