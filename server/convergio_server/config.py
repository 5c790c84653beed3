"""One settings object for the whole server.

Sources, highest precedence first: command-line flags (passed in as overrides),
environment variables (`CONVERGIO_*`, plus the conventional `DATABASE_URL` and
`REDIS_URL`), an optional TOML file (`CONVERGIO_CONFIG_FILE` or `--config`),
then the defaults below. README.md has a table of every setting; a test keeps
that table and this class in step.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# An environment variable's name (model keys callers may name are checked against it too).
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
# A tenant id; the domain's rule too (here so that config imports no domain code).
TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
# gRPC takes message sizes and keepalive milliseconds as C ints; larger values overflow.
_MAX_C_INT = 2**31 - 1
_MAX_KEEPALIVE_SECONDS = _MAX_C_INT // 1000


class SettingsError(ValueError):
    """A setting or the settings file is unusable; the message is one line for operators."""


def _split_host_port(name: str, value: str, lowest_port: int) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{name} must be host:port, for example 127.0.0.1:50051")
    # int() of a port such as 99999 would reach the socket layer, which keeps its low 16 bits.
    if not lowest_port <= int(port) <= 65535:
        raise ValueError(f"{name} port {port} is outside {lowest_port}-65535")


class Settings(BaseSettings):
    """Every setting of the server. Field descriptions feed `convergio serve --help`."""

    model_config = SettingsConfigDict(
        env_prefix="CONVERGIO_",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        # An infinite or NaN interval only ever ends in an overflow deep in a library.
        allow_inf_nan=False,
    )
    # Where values given other than by the environment came from (`load_settings`).
    _places: dict[str, str] = PrivateAttr(default_factory=dict)

    def source(self, key: str) -> str:
        """Where the value of setting `key` came from, as an operator finds it to change it:
        `--listen`, `in /etc/convergio.toml`, the environment variable, or the default."""
        if key in self._places:
            return self._places[key]
        names = _env_names(key)
        given = next((name for name in os.environ if name.upper() in names), None)
        return given or f"the default; {names[0]} sets it"

    listen: str = Field(
        "127.0.0.1:50051",
        description="host:port the gRPC server listens on; port 0 = any free port (the "
        "start-up line shows which)",
    )
    data_dir: Path = Field(
        Path(".convergio"),
        description="directory for the embedded PostgreSQL and Redis and the dev API key",
    )
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "CONVERGIO_DATABASE_URL"),
        description="PostgreSQL DSN; unset = start the embedded PostgreSQL under data_dir",
    )
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "CONVERGIO_REDIS_URL"),
        description="Redis URL; unset = start the embedded Redis under data_dir",
    )
    redis_prefix: str = Field("cvg", description="prefix of every Redis key the server writes")
    db_pool_min: int = Field(
        1, ge=0, description="minimum PostgreSQL connections per process (at most db_pool_max)"
    )
    db_pool_max: int = Field(10, ge=1, description="maximum PostgreSQL connections per process")
    connect_timeout_seconds: float = Field(
        5.0, gt=0, description="timeout for reaching PostgreSQL or Redis at start-up"
    )
    db_command_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="longest a PostgreSQL statement may take before the call that made it "
        "fails with UNAVAILABLE (a hung server does not hold calls for ever)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    log_format: Literal["json", "text"] = Field(
        "text", description="`json` for one JSON object per line, `text` for humans"
    )
    max_message_bytes: int = Field(
        4 * 1024 * 1024,
        # Reflection answers with descriptor sets of about 120 KiB: below this, grpcurl's
        # describe and list would fail.
        ge=256 * 1024,
        le=_MAX_C_INT,
        description="largest gRPC message accepted or sent (256 KiB to 2147483647)",
    )
    gc_full_interval_seconds: float = Field(
        30.0,
        ge=0,
        description="seconds between full garbage collections of a serving process (each "
        "pauses its streams for tens of ms under load); 0 = automatic full collections, "
        "after every 100 collections of the middle generation (CPython's default: 10)",
    )
    grace_period_seconds: float = Field(
        10.0, ge=0, description="on SIGTERM, how long open streams may run before they are closed"
    )
    keepalive_time_seconds: float = Field(
        30.0,
        gt=0,
        le=_MAX_KEEPALIVE_SECONDS,
        description="interval of HTTP/2 keepalive pings to idle clients (at most 2147483)",
    )
    keepalive_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=_MAX_KEEPALIVE_SECONDS,
        description="how long to wait for a keepalive ack before closing (at most 2147483)",
    )
    health_interval_seconds: float = Field(
        1.0, gt=0, description="how often PostgreSQL and Redis are probed for the health service"
    )
    auth_cache_seconds: float = Field(
        5.0, ge=0, description="how long a verified API key is cached in a process"
    )
    key_check_seconds: float = Field(
        5.0,
        gt=0,
        description="how often a process checks whether the API keys of its open streams "
        "were revoked elsewhere; such a stream ends with UNAUTHENTICATED within this time",
    )
    bootstrap_dev_key: bool = Field(
        True,
        description="on first start create the `dev` tenant with an admin key and print it",
    )
    dev_tenant: str = Field(
        "dev",
        description="id of the development tenant created at start (1-63 of a-z, 0-9, `-`); "
        "its saved key is printed only while it is valid for this tenant",
    )
    flags_file: Path | None = Field(
        None, description="seed file of flags imported at start (unchanged flags are left alone)"
    )
    flags_file_tenant: str = Field(
        "", description="tenant that flags_file is imported into; empty = dev_tenant"
    )
    flags_reload_seconds: float = Field(
        30.0, gt=0, description="how often each process reloads every flag besides notifications"
    )
    flagd_tenant: str | None = Field(
        None,
        description="tenant read by flagd.evaluation.v1 calls without an API key; unset = "
        "dev_tenant when bootstrap_dev_key is on, empty = such calls are refused",
    )
    metrics_listen: str = Field(
        "", description="host:port for Prometheus /metrics; empty = no metrics endpoint"
    )
    traces_endpoint: str = Field(
        "",
        description="OTLP/HTTP traces URL (e.g. http://otel-collector:4318/v1/traces) for a "
        "span per RPC, turn, model call and tool call; console = write them to stderr; "
        "empty = no traces",
    )
    traces_sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="share of calls without a sampled traceparent that are traced (0-1)",
    )
    cost_prices_file: Path | None = Field(
        None, description="TOML price table that overrides and extends the shipped prices"
    )
    cost_fallback_input_usd: str = Field(
        "1.00", description="USD per million input tokens for models missing from the table"
    )
    cost_fallback_output_usd: str = Field(
        "2.00", description="USD per million output tokens for models missing from the table"
    )
    cost_default_tenant_daily_usd: str = Field(
        "50.00", description="daily limit of a new tenant's budget; empty = none"
    )
    cost_default_tenant_per_turn_usd: str = Field(
        "0.50", description="per-turn cap of a new tenant's budget; empty = none"
    )
    cost_default_conversation_total_usd: str = Field(
        "5.00", description="default total limit of every conversation of a new tenant"
    )
    cost_default_max_output_tokens: int = Field(
        4096, ge=1, description="output tokens reserved per model call when the call sets none"
    )
    ledger_flush_interval_seconds: float = Field(
        0.5, gt=0, description="how often batched cost ledger rows are written"
    )
    ledger_batch_size: int = Field(500, ge=1, description="most ledger rows written at once")
    breaker_failure_threshold: int = Field(
        5, ge=1, description="consecutive failed calls that open a circuit breaker"
    )
    breaker_cost_spike_threshold: int = Field(
        5, ge=1, description="cost spikes among the last 10 turns that open the tenant breaker"
    )
    breaker_cost_spike_factor: float = Field(
        3.0, gt=1, description="a turn is a cost spike above this times the moving average"
    )
    breaker_cool_down_seconds: float = Field(
        60.0, gt=0, description="time a breaker stays open before it lets one probe through"
    )
    breaker_success_threshold: int = Field(
        3, ge=1, description="successful probes that close a half-open breaker"
    )
    rate_limit_turns_per_minute: int = Field(
        10, ge=1, description="turns a user may start in a sliding minute"
    )
    rate_limit_conversations_per_hour: int = Field(
        20, ge=1, description="conversations a user may create in a sliding hour"
    )
    screening_action: Literal["block", "flag"] = Field(
        "block", description="what input screening does with a match: `block` or `flag`"
    )
    screening_rules_file: Path | None = Field(
        None, description="TOML screening rules used instead of the shipped ones"
    )

    agents_dir: str = Field(
        "",
        description="directories of agent and preset TOML files that extend or override the "
        "built-in roster, separated by the OS path separator (`:` on Linux)",
    )
    openai_base_url: str = Field(
        "",
        description="default OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 or "
        "http://localhost:11434/v1; with this, the key or the model set, agents use it",
    )
    openai_api_key: SecretStr | None = Field(
        None, description="API key of the default endpoint (never logged or returned)"
    )
    openai_model: str = Field("", description="model name at the default endpoint")
    # NoDecode: the environment gives a comma-separated list, not the JSON pydantic expects.
    model_key_refs: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="comma-separated names of environment variables holding model API keys "
        "that callers may name in a model endpoint's api_key_ref (sent to any base URL the "
        "caller chooses); the server's own settings (CONVERGIO_*, DATABASE_URL, REDIS_URL) "
        "are refused",
    )
    model_timeout_seconds: float = Field(
        60.0, gt=0, description="timeout of one model call, retries included"
    )
    model_max_retries: int = Field(
        3, ge=0, description="retries of a model call after a timeout, 429 or 5xx (with backoff)"
    )
    history_max_tokens: int = Field(
        32_000,
        ge=100,
        description="most tokens of earlier messages an agent's model call carries (the newest "
        "that fit; the running turn's always go, and the model's context window may allow less)",
    )
    offline_tokens_per_second: float = Field(
        0.0, ge=0, description="pace of the offline model; 0 = as fast as possible"
    )
    offline_min_answer_tokens: int = Field(
        0,
        ge=0,
        le=4096,
        description="the offline model pads its answers with further sentences in the "
        "agent's voice up to this many tokens (longer streams for load tests)",
    )
    token_coalesce_ms: float = Field(
        5.0,
        ge=0,
        description="window over which token chunks are coalesced into one TokenDelta "
        "event (the first chunk after a quiet window goes out at once)",
    )
    event_window_seconds: float = Field(
        600.0,
        gt=0,
        description="how long an idle conversation's live event log (token "
        "deltas included) stays in Redis; older events replay from PostgreSQL",
    )
    stream_heartbeat_seconds: float = Field(
        15.0, gt=0, description="interval of Heartbeat events on an idle event stream"
    )
    turn_lease_seconds: float = Field(
        10.0,
        gt=0,
        description="lease of a running turn; another process ends the turn of a "
        "process that stopped renewing it for this long",
    )
    turn_end_retry_seconds: float = Field(
        120.0,
        gt=0,
        description="how long a turn retries logging its end while Redis is out of reach; "
        "after that (and a lease), another process's sweep logs the end for it",
    )
    turn_endings_at_once: int = Field(
        2,
        ge=0,
        le=10_000,
        description="turns of a process that write their end at once while other turns "
        "of the process stream tokens; more wait their turn, so that tokens do not wait "
        "behind a burst of ends. 0 = no limit",
    )
    max_running_turns: int = Field(
        500,
        ge=0,
        le=1_000_000,
        description="new turns a process runs at once; beyond it SendMessage answers "
        "UNAVAILABLE (reason SERVER_BUSY, retry after 1 s), so that the turns running keep "
        "their latency. Queued turns it promotes are not refused. 0 = no limit",
    )
    teams_kept: int = Field(
        256,
        ge=0,
        le=100_000,
        description="AutoGen teams a process keeps in memory after their turn, so that the "
        "conversation's next turn there need not rebuild and restore its team. 0 = none",
    )
    teams_kept_mib: int = Field(
        256,
        ge=0,
        le=1_000_000,
        description="memory the kept teams may hold together, estimated as ten times the "
        "size of their saved state; the oldest are dropped beyond it",
    )
    team_idle_seconds: float = Field(
        300.0,
        gt=0,
        description="how long a kept team waits for its conversation's next turn before "
        "it is dropped",
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        _split_host_port("listen", value, 0)
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _check_metrics_listen(cls, value: str) -> str:
        if value:
            # Port 0 is refused: nothing would tell Prometheus which port was taken.
            _split_host_port("metrics_listen", value, 1)
        return value

    @field_validator("traces_endpoint")
    @classmethod
    def _check_traces_endpoint(cls, value: str) -> str:
        if value and value != "console" and not value.startswith(("http://", "https://")):
            raise ValueError(
                f"{value!r} is not an OTLP/HTTP URL: use http(s)://host:4318/v1/traces, "
                "console, or nothing"
            )
        return value

    @field_validator("dev_tenant")
    @classmethod
    def _check_dev_tenant(cls, value: str) -> str:
        if not TENANT_ID.match(value):
            raise ValueError(
                "dev_tenant must be 1-63 characters of a-z, 0-9 and '-', "
                "starting with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _check_pool(self) -> Self:
        if self.db_pool_min > self.db_pool_max:
            raise ValueError(
                f"db_pool_min ({self.db_pool_min}) must be <= db_pool_max ({self.db_pool_max})"
            )
        return self

    @field_validator("model_key_refs", mode="before")
    @classmethod
    def _split_model_key_refs(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            names = tuple(str(name).strip() for name in value if str(name).strip())
            for name in names:
                if not ENV_NAME.match(name):
                    raise ValueError(f"{name!r} is not an environment variable name")
                if is_server_setting(name):
                    # Offering one would let a caller send the server's own secrets
                    # (database password, default API key) to a URL of its choosing.
                    raise ValueError(f"{name} is a setting of the server and cannot be offered")
            return names
        return value

    @property
    def anonymous_flagd_tenant(self) -> str:
        """The tenant of flagd calls that carry no API key, or "" to refuse them."""
        if self.flagd_tenant is not None:
            return self.flagd_tenant
        return self.dev_tenant if self.bootstrap_dev_key else ""

    @property
    def embedded_postgres(self) -> bool:
        return not self.database_url

    @property
    def embedded_redis(self) -> bool:
        return not self.redis_url


def is_server_setting(name: str) -> bool:
    """Whether the server reads the environment variable `name` as one of its settings
    (pydantic-settings matches names without regard to case)."""
    upper = name.upper()
    if upper.startswith("CONVERGIO_"):
        return True
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices) and upper in {
            str(choice).upper() for choice in alias.choices
        }:
            return True
    return False


def load_settings(
    overrides: dict[str, Any] | None = None, config_file: Path | None = None
) -> Settings:
    """Build the settings: overrides (CLI flags) > environment > TOML file > defaults."""
    file_values: dict[str, Any] = {}
    path = config_file or (
        Path(os.environ["CONVERGIO_CONFIG_FILE"])
        if os.environ.get("CONVERGIO_CONFIG_FILE")
        else None
    )
    if path is not None:
        file_values = _read_file(path)
    # Environment beats the file: drop file keys that the environment sets. pydantic reads
    # environment names in any case, so they are compared in one case here too.
    env_names = {name.upper() for name in os.environ}
    merged: dict[str, Any] = {}
    # Where each value that is not the environment's came from, so that an error names the
    # place the operator has to fix (`origins`: with the TOML type a bad value had there).
    places: dict[str, str] = {}
    origins: dict[str, str] = {}
    for key, value in file_values.items():
        field = Settings.model_fields.get(key)
        if field is None:
            raise SettingsError(f"unknown setting {key!r} in {path}")
        if env_names.isdisjoint(_env_names(key)):
            merged[key] = value
            places[key] = f"in {path}"
            origins[key] = f"in {path}, where it is {_toml_kind(value)}"
    for key, value in (overrides or {}).items():
        if value is not None:
            merged[key] = value
            places[key] = origins[key] = f"--{key.replace('_', '-')}"
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise SettingsError(describe_settings_error(exc, origins)) from None
    settings._places = places
    return settings


def _env_names(key: str) -> list[str]:
    """The environment variables (upper case) that set the field `key`, the one the docs
    name first."""
    alias = Settings.model_fields[key].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice).upper() for choice in alias.choices]
    return [f"CONVERGIO_{key.upper()}"]


_TOML_KINDS: tuple[tuple[type[Any], str], ...] = (
    (bool, "a boolean"),  # before int: a bool is an int
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
)


def _toml_kind(value: Any) -> str:
    # The type, never the value: a mistyped key or URL may hold a secret.
    return next((kind for t, kind in _TOML_KINDS if isinstance(value, t)), "a date or time")


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        problem = "no such file"
    except IsADirectoryError:
        problem = "is a directory, not a TOML file"
    except PermissionError:
        problem = "permission denied"
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        problem = f"invalid TOML: {exc}"
    raise SettingsError(f"settings file {path}: {problem}")


def describe_settings_error(
    error: ValidationError, origins: Mapping[str, str] | None = None
) -> str:
    """One line naming each bad setting with where it came from: `origins` for values given
    by the settings file or the command line (see `load_settings`), else its environment
    variable."""
    origins = origins or {}
    parts = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        key = str(item["loc"][0]) if item["loc"] else ""
        if key in origins:
            name = f"{name} ({origins[key]})"
        elif key in Settings.model_fields:
            name = f"{name} ({_env_names(key)[0]})"
        parts.append(f"{name}: {message}" if name else message)
    return "invalid settings: " + "; ".join(parts)


def prepare_data_dir(settings: Settings) -> None:
    """Create the data directory and prove it writable before anything is stored that
    must be written there (the dev key's secret exists nowhere else)."""
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            raise NotADirectoryError(f"{path} is not a directory")
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        problem = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError | NotADirectoryError):
            problem = "exists and is not a directory"
        raise SettingsError(
            f"data_dir ({settings.source('data_dir')}) {path} is not a writable directory: "
            f"{problem}"
        ) from None
