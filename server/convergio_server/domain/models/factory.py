"""Build the AutoGen model client for a model selection.

Precedence of a selection's empty fields: the agent's default model (from the roster), then
the server settings. With nothing configured the provider is `offline`; with any of
`CONVERGIO_OPENAI_BASE_URL`, `CONVERGIO_OPENAI_API_KEY` or `CONVERGIO_OPENAI_MODEL` set,
the default provider is `openai` at that endpoint.

A selection's `api_key_ref` may name only a key the operator offers in
`CONVERGIO_MODEL_KEY_REFS`: the key goes to whatever base URL the selection names, so any
other environment variable (a database URL, the server's own settings) must stay out of reach.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any, Protocol
from urllib.parse import urlsplit

from autogen_core.models import ChatCompletionClient, ModelInfo

from convergio_server.config import ENV_NAME, is_server_setting
from convergio_server.domain.agents.roster import AgentSpec
from convergio_server.domain.errors import InvalidArgument
from convergio_server.domain.models.errors import ModelError
from convergio_server.domain.models.offline import OFFLINE_MODEL_NAME, OfflineChatCompletionClient
from convergio_server.domain.models.openai_compat import (
    DEFAULT_CONTEXT_TOKENS,
    OpenAICompatChatCompletionClient,
)
from convergio_server.domain.models.selection import (
    CONTEXT_WINDOW_RULE,
    PROVIDERS,
    ModelSelection,
    context_window_allowed,
)

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
# Says nothing of whether the variable exists: callers must not probe the environment.
NOT_OFFERED = (
    "names no model key this server offers; the operator lists them in CONVERGIO_MODEL_KEY_REFS"
)


class ModelSettings(Protocol):
    """The settings the factory reads (a subset of `config.Settings`)."""

    @property
    def openai_base_url(self) -> str: ...

    @property
    def openai_model(self) -> str: ...

    @property
    def model_timeout_seconds(self) -> float: ...

    @property
    def model_max_retries(self) -> int: ...

    @property
    def offline_tokens_per_second(self) -> float: ...

    @property
    def offline_min_answer_tokens(self) -> int: ...

    @property
    def model_key_refs(self) -> Collection[str]: ...

    # `openai_api_key` is a pydantic SecretStr or None; read through `_default_key`.


def _default_key(settings: ModelSettings) -> str:
    secret = getattr(settings, "openai_api_key", None)
    if secret is None:
        return ""
    value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
    return str(value)


def default_selection(settings: ModelSettings) -> ModelSelection:
    """The server's default model: offline unless an OpenAI-compatible endpoint is set."""
    if settings.openai_base_url or settings.openai_model or _default_key(settings):
        return ModelSelection(
            provider="openai",
            model=settings.openai_model or DEFAULT_OPENAI_MODEL,
            base_url=settings.openai_base_url,
        )
    return ModelSelection(provider="offline", model=OFFLINE_MODEL_NAME)


def resolve_selection(
    selection: ModelSelection | None, settings: ModelSettings, agent: AgentSpec | None = None
) -> ModelSelection:
    """The complete selection: `selection`, then the agent's default, then the server's."""
    resolved = selection or ModelSelection()
    if agent is not None and agent.default_model is not None:
        resolved = resolved.over(agent.default_model)
    resolved = resolved.over(default_selection(settings))
    if resolved.provider == "offline" and not resolved.model:
        resolved = replace(resolved, model=OFFLINE_MODEL_NAME)
    if resolved.provider == "openai" and not resolved.model:
        resolved = replace(resolved, model=settings.openai_model or DEFAULT_OPENAI_MODEL)
    return resolved


def key_ref_offered(name: str, settings: ModelSettings) -> bool:
    """Whether `api_key_ref` `name` is a key the operator offers to selections. The
    server's own settings never are, even when listed."""
    return (
        bool(ENV_NAME.match(name))
        and not is_server_setting(name)
        and name in settings.model_key_refs
    )


def resolve_api_key(
    selection: ModelSelection,
    settings: ModelSettings,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The API key for `selection`: the offered key named by `api_key_ref` (an environment
    variable listed in `model_key_refs`), else the server's default key, but only for the
    server's default endpoint: a caller-chosen base URL never receives the deployment's key.
    Never logged, never returned to clients."""
    env = os.environ if environ is None else environ
    name = selection.api_key_ref
    if name:
        # Checked again here, not only when a selection is stored: selections stored
        # earlier and roster files never went through `check_selection`.
        if not key_ref_offered(name, settings):
            raise ModelError(f"api_key_ref {name!r} {NOT_OFFERED}", kind="configuration")
        if name not in env:
            raise ModelError(
                f"model key {name!r} is offered but not set on the server", kind="configuration"
            )
        return env[name]
    if selection.base_url and selection.base_url != settings.openai_base_url:
        return ""
    return _default_key(settings)


# A model name as providers spell them ("gpt-4o-mini", "llama3.1:8b", "org/model@v2").
_MODEL_NAME = re.compile(r"[!-~]{1,200}\Z")


def base_url_problem(url: str) -> str | None:
    """What is wrong with an endpoint's base URL, or None: an http(s) URL with a host, a
    valid port, no credentials (they would be sent and logged) and no query or fragment."""
    if not url.startswith(("http://", "https://")):
        return "must be an http:// or https:// URL"
    if len(url) > 2000 or any(c.isspace() or not c.isprintable() for c in url):
        return "must be at most 2000 characters, without spaces"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "has a port that is not a number from 1 to 65535"
    if not parts.hostname:
        return "has no host, e.g. http://localhost:11434/v1"
    if port == 0:
        return "has a port that is not a number from 1 to 65535"
    if parts.username is not None or parts.password is not None:
        return "must not hold credentials (user:password@): name a key with api_key_ref"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "must not have a query or a fragment"
    return None


def check_selection(
    selection: ModelSelection,
    settings: ModelSettings,
    *,
    field: str = "model",
    environ: Mapping[str, str] | None = None,
) -> None:
    """Validate a caller's selection before it is stored: InvalidArgument naming the field
    (`model.endpoint.api_key_ref`, `model.temperature`, ...) for what cannot be served."""
    env = os.environ if environ is None else environ
    if selection.provider not in ("", *PROVIDERS):
        raise InvalidArgument.for_field(f"{field}.provider", "must be offline or openai")
    if selection.base_url:
        problem = base_url_problem(selection.base_url)
        if problem is not None:
            raise InvalidArgument.for_field(f"{field}.endpoint.base_url", problem)
    if selection.model and not _MODEL_NAME.match(selection.model):
        raise InvalidArgument.for_field(
            f"{field}.model", "must be 1-200 printable characters without spaces"
        )
    if selection.api_key_ref:
        if not key_ref_offered(selection.api_key_ref, settings):
            raise InvalidArgument.for_field(f"{field}.endpoint.api_key_ref", NOT_OFFERED)
        if selection.api_key_ref not in env:
            raise InvalidArgument.for_field(
                f"{field}.endpoint.api_key_ref",
                "names a model key that is offered but not set on the server",
            )
    if selection.temperature is not None and not 0 <= selection.temperature <= 2:
        raise InvalidArgument.for_field(f"{field}.temperature", "must be from 0 to 2")
    if not 0 <= selection.max_output_tokens <= 1_000_000:
        raise InvalidArgument.for_field(
            f"{field}.max_output_tokens", "must be from 1 to 1,000,000 (0 = default)"
        )
    if not context_window_allowed(selection.context_window):
        raise InvalidArgument.for_field(
            f"{field}.endpoint.model_info.context_window_tokens", f"must be {CONTEXT_WINDOW_RULE}"
        )
    if selection.timeout_seconds is not None and selection.timeout_seconds <= 0:
        raise InvalidArgument.for_field(f"{field}.endpoint.timeout", "must be positive")
    if (
        selection.provider == "openai"
        and not (selection.base_url or selection.api_key_ref)
        and not (settings.openai_base_url or _default_key(settings))
    ):
        # It would call the provider's own endpoint without a key: every turn would fail.
        raise InvalidArgument.for_field(
            f"{field}.endpoint",
            "is needed: this server has no default OpenAI-compatible endpoint or key "
            "(CONVERGIO_OPENAI_BASE_URL, CONVERGIO_OPENAI_API_KEY); give a base_url, or an "
            "api_key_ref for the provider's own endpoint",
        )


def create_model_client(
    selection: ModelSelection | None,
    settings: ModelSettings,
    *,
    agent: AgentSpec | None = None,
    environ: Mapping[str, str] | None = None,
) -> ChatCompletionClient:
    """A new AutoGen model client for `selection` (None = defaults). Build one per
    conversation and agent: clients keep per-instance usage counters."""
    resolved = resolve_selection(selection, settings, agent)
    if resolved.provider == "offline":
        return OfflineChatCompletionClient(
            resolved.model,
            tokens_per_second=resolved.tokens_per_second or settings.offline_tokens_per_second,
            min_completion_tokens=settings.offline_min_answer_tokens,
            max_completion_tokens=resolved.max_output_tokens or 4096,
        )
    if resolved.provider == "openai":
        base_url = resolved.base_url or settings.openai_base_url
        problem = base_url_problem(base_url) if base_url else None
        if problem is not None:  # (a selection stored before the rule; not echoed: it may
            # hold credentials)
            raise ModelError(f"the endpoint's base_url {problem}", kind="configuration")
        info: ModelInfo | None = None
        if resolved.model_info is not None:
            raw: dict[str, Any] = resolved.model_info.as_autogen()
            info = ModelInfo(**raw)  # type: ignore[typeddict-item]
        return OpenAICompatChatCompletionClient(
            model=resolved.model,
            base_url=base_url,
            api_key=resolve_api_key(resolved, settings, environ),
            model_info=info,
            timeout_seconds=resolved.timeout_seconds or settings.model_timeout_seconds,
            max_retries=settings.model_max_retries,
            temperature=resolved.temperature,
            max_output_tokens=resolved.max_output_tokens,
            context_tokens=resolved.context_window or DEFAULT_CONTEXT_TOKENS,
        )
    raise ModelError(f"unknown model provider {resolved.provider!r}", kind="configuration")
