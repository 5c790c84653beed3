"""The roster: the specialist agents and the team presets, loaded from TOML files.

Built-ins live in `convergio_server/data/agents/*.toml` and `data/presets.toml`. Each
directory of `CONVERGIO_AGENTS_DIR` (several separated by the OS path separator) may add
agents (`<name>.toml`) and presets (`presets.toml`). A user file for an existing agent
changes only the fields it sets; a new name adds an agent. Every file is validated and
errors name the file and the field.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from convergio_server.domain.errors import NotFound
from convergio_server.domain.models.selection import (
    CONTEXT_WINDOW_RULE,
    PROVIDERS,
    ModelInfoOverride,
    ModelSelection,
    context_window_allowed,
)

NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
CATEGORIES = (
    "strategic",
    "financial",
    "technical",
    "security",
    "analytical",
    "operational",
    "coordination",
    "creative",
    "legal",
    "people",
)
PRESETS_FILE = "presets.toml"

_AGENT_FIELDS = {
    "name",
    "display_name",
    "role",
    "description",
    "category",
    "priority",
    "expertise",
    "tools",
    "system_prompt",
    "model",
}
_MODEL_FIELDS = {
    "provider",
    "model",
    "base_url",
    "api_key_ref",
    "timeout_seconds",
    "temperature",
    "max_output_tokens",
    "model_info",
}
_MODEL_INFO_FIELDS = {
    "function_calling",
    "vision",
    "json_output",
    "structured_output",
    "family",
    "context_window_tokens",
}


class RosterError(ValueError):
    """A roster file is wrong; the message names the file and the field."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class AgentSpec:
    """One specialist: who it is, what it knows, how it talks and what it may use."""

    name: str
    display_name: str
    role: str
    description: str
    category: str
    priority: int
    expertise: tuple[str, ...]
    tools: tuple[str, ...]
    system_prompt: str
    default_model: ModelSelection | None = None
    source: str = ""  # the file(s) it was read from, for error messages

    @property
    def system_message(self) -> str:
        """The system message for the model: identity line, instructions, expertise and
        tools. The first line ("You are <Name>, <role>.") is also how the offline model
        learns the role."""
        lines = [f"You are {self.display_name}, {self.role}.", "", self.system_prompt.strip()]
        if self.expertise:
            lines += ["", "Your expertise: " + ", ".join(self.expertise) + "."]
        if self.tools:
            lines += [
                "",
                "Tools you may call when they help: " + ", ".join(self.tools) + ". "
                "Use a tool's result in your answer and say where a figure comes from.",
            ]
        return "\n".join(lines)

    @property
    def selector_description(self) -> str:
        """One line for AutoGen's speaker-selection prompt and AssistantAgent.description."""
        return f"{self.role}. {self.description} Expertise: {', '.join(self.expertise)}."


@dataclass(frozen=True)
class TeamPreset:
    name: str
    description: str
    agents: tuple[str, ...]


class Roster:
    """Agents by name and team presets; immutable once loaded."""

    def __init__(self, agents: Iterable[AgentSpec], presets: Iterable[TeamPreset]) -> None:
        ordered = sorted(agents, key=lambda a: (-a.priority, a.name))
        self._agents = {a.name: a for a in ordered}
        self._presets = {p.name: p for p in presets}

    @classmethod
    def load(
        cls,
        extra_dirs: Sequence[Path] = (),
        *,
        known_tools: Iterable[str] | None = None,
        builtin: Traversable | None = None,
    ) -> Roster:
        """The built-in roster, then each of `extra_dirs` in order. With `known_tools`,
        every agent's tools must be among them."""
        root = builtin if builtin is not None else files("convergio_server") / "data"
        raw_agents: dict[str, tuple[dict[str, Any], str]] = {}
        raw_presets: dict[str, tuple[dict[str, Any], str]] = {}
        _read_dir(root / "agents", root / PRESETS_FILE, "built-in ", raw_agents, raw_presets)
        for directory in extra_dirs:
            if not directory.is_dir():
                raise RosterError(str(directory), "", "agents directory does not exist")
            _read_dir(directory, directory / PRESETS_FILE, "", raw_agents, raw_presets)
        tools = set(known_tools) if known_tools is not None else None
        agents = [_agent(data, source, tools) for data, source in raw_agents.values()]
        names = {a.name for a in agents}
        presets = [
            _preset(name, data, source, names) for name, (data, source) in raw_presets.items()
        ]
        return cls(agents, presets)

    def get(self, name: str) -> AgentSpec:
        agent = self._agents.get(name)
        if agent is None:
            shown = _shown(name)
            raise NotFound(
                f"agent {shown!r} is not in the roster; valid agents: {', '.join(self._agents)}",
                metadata={"agent": shown},
            )
        return agent

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def agents(self) -> list[AgentSpec]:
        """Every agent, highest priority first (then by name)."""
        return list(self._agents.values())

    def presets(self) -> list[TeamPreset]:
        return list(self._presets.values())

    def preset(self, name: str) -> TeamPreset:
        preset = self._presets.get(name)
        if preset is None:
            shown = _shown(name)
            raise NotFound(
                f"team preset {shown!r} does not exist; valid presets: {', '.join(self._presets)}",
                metadata={"preset": shown},
            )
        return preset

    def presets_of(self, agent: str) -> list[str]:
        """Names of the presets that include `agent`."""
        return [p.name for p in self._presets.values() if agent in p.agents]

    def ordered(self, names: Iterable[str]) -> list[AgentSpec]:
        """The named agents in roster priority order (NotFound for an unknown name)."""
        wanted = [self.get(n) for n in dict.fromkeys(names)]
        return sorted(wanted, key=lambda a: (-a.priority, a.name))


def split_dirs(setting: str) -> list[Path]:
    """The directories of the `agents_dir` setting (OS path separator between them)."""
    return [Path(part).expanduser() for part in setting.split(os.pathsep) if part.strip()]


def _load_toml(entry: Traversable | Path, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(entry.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RosterError(source, "", f"not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise RosterError(source, "", "not UTF-8 text") from exc


def _read_dir(
    directory: Traversable | Path,
    presets_file: Traversable | Path,
    label: str,
    agents: dict[str, tuple[dict[str, Any], str]],
    presets: dict[str, tuple[dict[str, Any], str]],
) -> None:
    entries = sorted(
        (e for e in directory.iterdir() if e.name.endswith(".toml") and e.name != PRESETS_FILE),
        key=lambda e: e.name,
    )
    for entry in entries:
        source = f"{label}{_describe(directory, entry)}"
        data = _load_toml(entry, source)
        stem = entry.name.removesuffix(".toml")
        name = data.get("name", stem)
        if name != stem:
            raise RosterError(source, "name", f"must match the file name ({stem!r}), got {name!r}")
        if not NAME.match(stem):
            raise RosterError(
                source, "name", "must be 1-32 of a-z, 0-9 and _, starting with a letter"
            )
        unknown = set(data) - _AGENT_FIELDS
        if unknown:
            raise RosterError(
                source,
                sorted(unknown)[0],
                f"unknown field; allowed: {', '.join(sorted(_AGENT_FIELDS))}",
            )
        if stem in agents:  # an override: only the fields it sets change
            base, base_source = agents[stem]
            merged = {**base, **data}
            if isinstance(base.get("model"), dict) and isinstance(data.get("model"), dict):
                merged["model"] = {**base["model"], **data["model"]}
            agents[stem] = (merged, f"{source} (over {base_source})")
        else:
            agents[stem] = ({**data, "name": stem}, source)
    if presets_file.is_file():
        source = f"{label}{_describe(directory, presets_file)}"
        for name, data in _load_toml(presets_file, source).items():
            if not isinstance(data, dict):
                raise RosterError(source, name, "must be a table with description and agents")
            presets[name] = (data, source)


def _describe(directory: Traversable | Path, entry: Traversable | Path) -> str:
    return str(entry) if isinstance(entry, Path) else f"{directory.name}/{entry.name}"


def _str(data: Mapping[str, Any], key: str, source: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise RosterError(source, key, "is required")
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise RosterError(source, key, "must be a non-empty string")
    return value.strip()


def _str_list(
    data: Mapping[str, Any], key: str, source: str, label: str | None = None
) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise RosterError(source, label or key, "must be a list of non-empty strings")
    return tuple(dict.fromkeys(v.strip() for v in value))


def _agent(data: dict[str, Any], source: str, known_tools: set[str] | None) -> AgentSpec:
    priority = data.get("priority")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 10:
        raise RosterError(source, "priority", "must be an integer from 1 to 10")
    category = _str(data, "category", source)
    if category not in CATEGORIES:
        raise RosterError(source, "category", f"must be one of: {', '.join(CATEGORIES)}")
    expertise = _str_list(data, "expertise", source)
    if not expertise:
        raise RosterError(source, "expertise", "needs at least one keyword")
    tools = _str_list(data, "tools", source)
    if known_tools is not None:
        for tool in tools:
            if tool not in known_tools:
                raise RosterError(
                    source,
                    "tools",
                    f"unknown tool {tool!r}; known tools: {', '.join(sorted(known_tools))}",
                )
    prompt = _str(data, "system_prompt", source)
    if len(prompt) < 40:
        raise RosterError(source, "system_prompt", "is too short to guide a model (40+ chars)")
    return AgentSpec(
        name=data["name"],
        display_name=_str(data, "display_name", source),
        role=_str(data, "role", source),
        description=_str(data, "description", source),
        category=category,
        priority=priority,
        expertise=expertise,
        tools=tools,
        system_prompt=prompt,
        default_model=_model(data.get("model"), source),
        source=source,
    )


def _model(value: Any, source: str) -> ModelSelection | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RosterError(source, "model", "must be a table")
    unknown = set(value) - _MODEL_FIELDS
    if unknown:
        raise RosterError(
            source,
            f"model.{sorted(unknown)[0]}",
            f"unknown field; allowed: {sorted(_MODEL_FIELDS)}",
        )
    provider = value.get("provider", "")
    if provider not in ("", *PROVIDERS):
        raise RosterError(source, "model.provider", f"must be one of: {', '.join(PROVIDERS)}")
    for key in ("model", "base_url", "api_key_ref"):
        if not isinstance(value.get(key, ""), str):
            raise RosterError(source, f"model.{key}", "must be a string")
    temperature = value.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        raise RosterError(source, "model.temperature", "must be a number from 0 to 2")
    max_tokens = value.get("max_output_tokens", 0)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise RosterError(source, "model.max_output_tokens", "must be a non-negative integer")
    timeout = value.get("timeout_seconds")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise RosterError(source, "model.timeout_seconds", "must be a positive number")
    info = value.get("model_info")
    override: ModelInfoOverride | None = None
    if info is not None:
        if not isinstance(info, dict) or set(info) - _MODEL_INFO_FIELDS:
            raise RosterError(
                source, "model.model_info", f"must be a table of {sorted(_MODEL_INFO_FIELDS)}"
            )
        if not context_window_allowed(info.get("context_window_tokens", 0)):
            raise RosterError(
                source,
                "model.model_info.context_window_tokens",
                f"must be an integer {CONTEXT_WINDOW_RULE}",
            )
        try:
            override = ModelInfoOverride(**info)
        except TypeError as exc:  # pragma: no cover - guarded by the key check above
            raise RosterError(source, "model.model_info", str(exc)) from exc
    return ModelSelection(
        provider=provider,
        model=value.get("model", ""),
        base_url=value.get("base_url", ""),
        api_key_ref=value.get("api_key_ref", ""),
        timeout_seconds=float(timeout) if timeout is not None else None,
        model_info=override,
        temperature=float(temperature) if temperature is not None else None,
        max_output_tokens=max_tokens,
    )


def _preset(name: str, data: Mapping[str, Any], source: str, agents: set[str]) -> TeamPreset:
    if not NAME.match(name):
        raise RosterError(source, name, "preset names are 1-32 of a-z, 0-9 and _")
    unknown = set(data) - {"description", "agents"}
    if unknown:
        raise RosterError(source, f"{name}.{sorted(unknown)[0]}", "unknown field")
    members = _str_list(data, "agents", source, f"{name}.agents")
    if not members:
        raise RosterError(source, f"{name}.agents", "needs at least one agent")
    for member in members:
        if member not in agents:
            raise RosterError(
                source,
                f"{name}.agents",
                f"unknown agent {member!r}; valid agents: {', '.join(sorted(agents))}",
            )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise RosterError(source, f"{name}.description", "must be a string")
    return TeamPreset(name=name, description=description, agents=members)


def _shown(name: str) -> str:
    """A name as an error quotes it: cut when long, so that the valid ones listed after it
    always fit the message."""
    return name if len(name) <= 64 else name[:63] + "…"
