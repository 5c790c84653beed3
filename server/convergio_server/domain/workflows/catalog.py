"""The workflow catalog: named multi-step plans (steps, agents, dependencies, approval gates)
read from `data/workflows.toml` and optional extra files, validated when loaded."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from convergio_server.domain.errors import NotFound
from convergio_server.domain.models.text import stems

DEFAULT_TIMEOUT_SECONDS = 300.0
DEFAULT_RETRIES = 1
_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
_WORKFLOW_FIELDS = {"title", "description", "keywords", "steps"}
_STEP_FIELDS = {
    "id",
    "agent",
    "description",
    "depends_on",
    "approval",
    "timeout_seconds",
    "retries",
}


class CatalogError(ValueError):
    """A workflow file is wrong; the message names the file and the field."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        super().__init__(f"{source}: {field}: {problem}")


@dataclass(frozen=True)
class WorkflowStep:
    id: str
    agent: str
    description: str
    depends_on: tuple[str, ...] = ()
    requires_approval: bool = False
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    retries: int = DEFAULT_RETRIES


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str
    title: str
    description: str
    keywords: tuple[str, ...]
    steps: tuple[WorkflowStep, ...]

    @property
    def approval_gates(self) -> list[str]:
        return [s.id for s in self.steps if s.requires_approval]

    @property
    def agents(self) -> list[str]:
        return list(dict.fromkeys(s.agent for s in self.steps))

    def step(self, step_id: str) -> WorkflowStep:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise NotFound(f"workflow {self.name!r} has no step {step_id!r}")

    def levels(self) -> list[list[str]]:
        """Steps grouped by depth: each group can run in parallel once the groups before
        it are done."""
        depth: dict[str, int] = {}
        for step in self.steps:  # steps are stored in a topological order
            depth[step.id] = 1 + max((depth[d] for d in step.depends_on), default=-1)
        groups: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for step in self.steps:
            groups[depth[step.id]].append(step.id)
        return groups

    def describe(self) -> str:
        """A compact text form for a model or a terminal."""
        lines = [f"{self.name}: {self.title}. {self.description}"]
        for step in self.steps:
            needs = f" after {', '.join(step.depends_on)}" if step.depends_on else ""
            gate = " [approval required]" if step.requires_approval else ""
            lines.append(f"- {step.id} ({step.agent}){needs}{gate}: {step.description}")
        return "\n".join(lines)


class WorkflowCatalog:
    def __init__(self, workflows: Iterable[WorkflowDefinition]) -> None:
        self._workflows = {w.name: w for w in workflows}

    @classmethod
    def load(
        cls,
        extra_files: Sequence[Path] = (),
        *,
        known_agents: Iterable[str] | None = None,
        builtin: Traversable | None = None,
    ) -> WorkflowCatalog:
        """The built-in catalog, then `extra_files` (a workflow with a built-in's name
        replaces it). With `known_agents`, every step's agent must be among them."""
        entry = builtin if builtin is not None else files("convergio_server") / "data"
        sources: list[tuple[str, str]] = [
            ("built-in workflows.toml", (entry / "workflows.toml").read_text(encoding="utf-8"))
        ]
        for path in extra_files:
            sources.append((str(path), path.read_text(encoding="utf-8")))
        agents = set(known_agents) if known_agents is not None else None
        workflows: dict[str, WorkflowDefinition] = {}
        for source, text in sources:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise CatalogError(source, "", f"not valid TOML: {exc}") from exc
            for name, raw in data.items():
                workflows[name] = _workflow(name, raw, source, agents)
        return cls(workflows.values())

    def workflows(self) -> list[WorkflowDefinition]:
        return list(self._workflows.values())

    def names(self) -> list[str]:
        return list(self._workflows)

    def get(self, name: str) -> WorkflowDefinition:
        workflow = self._workflows.get(name)
        if workflow is None:
            raise NotFound(
                f"workflow {name!r} is not in the catalog; known workflows: "
                f"{', '.join(self._workflows)}",
                metadata={"workflow": name},
            )
        return workflow

    def search(self, query: str, limit: int = 3) -> list[WorkflowDefinition]:
        """Workflows whose name, keywords, description or steps share words with `query`,
        best first."""
        wanted = stems(query)
        scored = []
        for position, workflow in enumerate(self._workflows.values()):
            name_hits = len(wanted & stems(workflow.name.replace("_", " ")))
            keyword_hits = len(wanted & stems(" ".join(workflow.keywords)))
            text_hits = len(
                wanted
                & stems(
                    workflow.description + " " + " ".join(s.description for s in workflow.steps)
                )
            )
            score = 3 * name_hits + 2 * keyword_hits + text_hits
            if score > 0:
                scored.append((score, position, workflow))
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [w for _, _, w in scored[:limit]]


def _workflow(name: str, raw: Any, source: str, agents: set[str] | None) -> WorkflowDefinition:
    if not _ID.match(name):
        raise CatalogError(source, name, "workflow names are 1-64 of a-z, 0-9 and _")
    if not isinstance(raw, dict):
        raise CatalogError(source, name, "must be a table")
    unknown = set(raw) - _WORKFLOW_FIELDS
    if unknown:
        raise CatalogError(source, f"{name}.{sorted(unknown)[0]}", "unknown field")
    for key in ("title", "description"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise CatalogError(source, f"{name}.{key}", "must be a non-empty string")
    keywords = raw.get("keywords", [])
    if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
        raise CatalogError(source, f"{name}.keywords", "must be a list of strings")
    raw_steps = raw.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise CatalogError(source, f"{name}.steps", "needs at least one [[steps]] entry")
    steps: list[WorkflowStep] = []
    seen: set[str] = set()
    for index, step in enumerate(raw_steps):
        where = f"{name}.steps[{index}]"
        if not isinstance(step, dict):
            raise CatalogError(source, where, "must be a table")
        extra = set(step) - _STEP_FIELDS
        if extra:
            raise CatalogError(source, f"{where}.{sorted(extra)[0]}", "unknown field")
        step_id = step.get("id")
        if not isinstance(step_id, str) or not _ID.match(step_id):
            raise CatalogError(source, f"{where}.id", "must be 1-64 of a-z, 0-9 and _")
        if step_id in seen:
            raise CatalogError(source, f"{where}.id", f"duplicate step id {step_id!r}")
        agent = step.get("agent")
        if not isinstance(agent, str) or not agent:
            raise CatalogError(source, f"{where}.agent", "is required")
        if agents is not None and agent not in agents:
            raise CatalogError(source, f"{where}.agent", f"unknown agent {agent!r}")
        description = step.get("description")
        if not isinstance(description, str) or not description.strip():
            raise CatalogError(source, f"{where}.description", "must be a non-empty string")
        depends = step.get("depends_on", [])
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise CatalogError(source, f"{where}.depends_on", "must be a list of step ids")
        for dependency in depends:
            if dependency not in seen:
                # Earlier steps only: this keeps the file in a runnable order and rules out
                # cycles.
                raise CatalogError(
                    source,
                    f"{where}.depends_on",
                    f"{dependency!r} is not a step defined before {step_id!r}",
                )
        approval = step.get("approval", False)
        if not isinstance(approval, bool):
            raise CatalogError(source, f"{where}.approval", "must be true or false")
        timeout = step.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise CatalogError(source, f"{where}.timeout_seconds", "must be a positive number")
        retries = step.get("retries", DEFAULT_RETRIES)
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise CatalogError(source, f"{where}.retries", "must be an integer from 0 to 10")
        seen.add(step_id)
        steps.append(
            WorkflowStep(
                id=step_id,
                agent=agent,
                description=description.strip(),
                depends_on=tuple(depends),
                requires_approval=approval,
                timeout_seconds=float(timeout),
                retries=retries,
            )
        )
    return WorkflowDefinition(
        name=name,
        title=raw["title"].strip(),
        description=raw["description"].strip(),
        keywords=tuple(keywords),
        steps=tuple(steps),
    )
