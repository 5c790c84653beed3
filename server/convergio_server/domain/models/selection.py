"""Which model answers, as the domain sees it (the API's `ModelSelection`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

Provider = Literal["", "offline", "openai"]
PROVIDERS: tuple[str, ...] = ("offline", "openai")
# The context windows a model's info may give, in tokens (0 = the clients' default).
CONTEXT_WINDOW_RULE = "from 1,000 to 10,000,000 (0 = 128,000)"


def context_window_allowed(tokens: object) -> bool:
    return (
        isinstance(tokens, int)
        and not isinstance(tokens, bool)
        and (tokens == 0 or 1_000 <= tokens <= 10_000_000)
    )


@dataclass(frozen=True)
class ModelInfoOverride:
    """Capabilities of a model the client library does not know (AutoGen's ModelInfo)."""

    function_calling: bool = True
    vision: bool = False
    json_output: bool = False
    structured_output: bool = False
    family: str = "unknown"
    # Not AutoGen's: how many tokens the model takes, prompt and answer (0 = the default).
    context_window_tokens: int = 0

    def as_autogen(self) -> dict[str, Any]:
        return {
            "function_calling": self.function_calling,
            "vision": self.vision,
            "json_output": self.json_output,
            "structured_output": self.structured_output,
            "family": self.family or "unknown",
            "multiple_system_messages": True,
        }


@dataclass(frozen=True)
class ModelSelection:
    """A model choice. Empty fields mean "the next level decides": a per-agent override,
    then the conversation's model, then the agent's default, then the server's settings.

    `api_key_ref` names a secret (an environment variable) holding the key; raw keys are
    never part of a selection, so a selection can be stored and shown safely.
    """

    provider: Provider = ""
    model: str = ""
    base_url: str = ""
    api_key_ref: str = ""
    timeout_seconds: float | None = None
    model_info: ModelInfoOverride | None = None
    temperature: float | None = None
    max_output_tokens: int = 0
    # Offline model only: generation pace for benchmarks (0 = no delay).
    tokens_per_second: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def context_window(self) -> int:
        """The model's context window from its info; 0 = the client's default."""
        return self.model_info.context_window_tokens if self.model_info else 0

    def over(self, fallback: ModelSelection | None) -> ModelSelection:
        """This selection with its empty fields filled from `fallback`. A different
        provider does not inherit the fallback's endpoint or model."""
        if fallback is None:
            return self
        if self.provider and fallback.provider and self.provider != fallback.provider:
            return self
        return replace(
            self,
            provider=self.provider or fallback.provider,
            model=self.model or fallback.model,
            base_url=self.base_url or fallback.base_url,
            api_key_ref=self.api_key_ref or fallback.api_key_ref,
            timeout_seconds=(
                self.timeout_seconds
                if self.timeout_seconds is not None
                else fallback.timeout_seconds
            ),
            model_info=self.model_info or fallback.model_info,
            temperature=self.temperature if self.temperature is not None else fallback.temperature,
            max_output_tokens=self.max_output_tokens or fallback.max_output_tokens,
            tokens_per_second=self.tokens_per_second or fallback.tokens_per_second,
        )
