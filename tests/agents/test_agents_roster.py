"""The roster: built-in agents and presets, user directories that extend or override them,
and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
from convergio_server.domain.agents.roster import Roster, RosterError, split_dirs
from convergio_server.domain.errors import NotFound

CORE = ["ali", "domik", "amy", "luca", "socrates", "diana", "wanda", "xavier"]
TOOLS = {"search_knowledge_base", "financial_calculator", "conversation_cost", "workflow_catalog"}

AGENT = """
display_name = "Nora"
role = "Procurement Lead: suppliers and purchasing"
category = "operational"
priority = 3
description = "Negotiates with suppliers and keeps purchasing costs down."
expertise = ["procurement", "suppliers", "purchasing"]
tools = ["financial_calculator"]
system_prompt = "You buy what the company needs at the best total cost, and you say how."
"""


def test_builtin_roster_has_the_core_eight_with_their_priorities() -> None:
    roster = Roster.load(known_tools=TOOLS)
    priorities = {a.name: a.priority for a in roster.agents()}
    assert {name: priorities[name] for name in CORE} == {
        "ali": 10,
        "domik": 9,
        "amy": 8,
        "luca": 8,
        "socrates": 7,
        "diana": 7,
        "wanda": 6,
        "xavier": 6,
    }
    assert len(roster.agents()) >= 13
    # Highest priority first.
    assert roster.agents()[0].name == "ali"
    assert list(roster.preset("core").agents) == CORE
    assert {"finance", "strategy", "security"} <= {p.name for p in roster.presets()}
    assert roster.presets_of("amy")[:2] == ["core", "finance"]


def test_every_builtin_agent_is_complete() -> None:
    for agent in Roster.load(known_tools=TOOLS).agents():
        assert agent.system_message.startswith(f"You are {agent.display_name}, {agent.role}.")
        assert len(agent.system_prompt) > 200, agent.name
        assert agent.expertise and agent.tools and agent.description
        assert agent.name.isidentifier()


def test_unknown_agent_names_the_agent_and_lists_valid_names() -> None:
    roster = Roster.load()
    with pytest.raises(NotFound) as info:
        roster.get("zed")
    assert "'zed'" in str(info.value) and "ali" in str(info.value) and "xavier" in str(info.value)
    with pytest.raises(NotFound, match="valid presets: core"):
        roster.preset("nope")
    # A very long name is cut: the valid names still fit the message a client gets.
    with pytest.raises(NotFound) as long:
        roster.get("x" * 5000)
    assert len(long.value.message) < 1000 and "xavier" in long.value.message


def test_user_dir_adds_agents_overrides_fields_and_adds_presets(tmp_path: Path) -> None:
    (tmp_path / "nora.toml").write_text(AGENT)
    (tmp_path / "amy.toml").write_text(
        "priority = 10\n[model]\ntemperature = 0.0\n"
        "[model.model_info]\nfamily = 'llama-3'\ncontext_window_tokens = 8192\n"
    )
    (tmp_path / "presets.toml").write_text(
        '[buying]\ndescription = "Purchasing"\nagents = ["nora", "amy"]\n'
        '[core]\ndescription = "Smaller core"\nagents = ["ali", "amy"]\n'
    )
    roster = Roster.load([tmp_path], known_tools=TOOLS)
    assert roster.get("nora").role.startswith("Procurement")
    amy = roster.get("amy")
    # Only the fields the override sets change.
    assert amy.priority == 10 and amy.role.startswith("Chief Financial Officer")
    assert amy.default_model is not None and amy.default_model.temperature == 0.0
    assert amy.default_model.model_info is not None
    assert amy.default_model.model_info.context_window_tokens == 8192
    assert roster.preset("buying").agents == ("nora", "amy")
    assert roster.preset("core").agents == ("ali", "amy")
    assert roster.preset("finance").agents  # built-ins stay
    assert [a.name for a in roster.ordered(["nora", "amy", "ali"])] == ["ali", "amy", "nora"]


@pytest.mark.parametrize(
    ("file_name", "content", "field", "problem"),
    [
        ("nora.toml", AGENT.replace("priority = 3", "priority = 11"), "priority", "1 to 10"),
        ("nora.toml", AGENT.replace('"operational"', '"magic"'), "category", "one of"),
        ("nora.toml", AGENT + 'colour = "red"\n', "colour", "unknown field"),
        ("nora.toml", AGENT.replace("display_name", "# display_name"), "display_name", "required"),
        ("nora.toml", AGENT.replace('"financial_calculator"', '"teleport"'), "tools", "teleport"),
        (
            "nora.toml",
            AGENT.replace("system_prompt = ", 'system_prompt = "short"\n#'),
            "system_prompt",
            "too short",
        ),
        ("nora.toml", AGENT + 'name = "other"\n', "name", "must match the file name"),
        ("Bad-Name.toml", AGENT, "name", "a-z"),
        ("nora.toml", AGENT + '[model]\nprovider = "acme"\n', "model.provider", "offline, openai"),
        ("nora.toml", AGENT + "[model]\ntemperature = 3\n", "model.temperature", "0 to 2"),
        (
            "nora.toml",
            AGENT + "[model.model_info]\ncontext_window_tokens = 512\n",
            "model.model_info.context_window_tokens",
            "1,000 to 10,000,000",
        ),
        ("nora.toml", "display_name = \n", "", "not valid TOML"),
    ],
)
def test_bad_agent_files_name_file_and_field(
    tmp_path: Path, file_name: str, content: str, field: str, problem: str
) -> None:
    (tmp_path / file_name).write_text(content)
    with pytest.raises(RosterError) as info:
        Roster.load([tmp_path], known_tools=TOOLS)
    assert info.value.field == field
    assert problem in info.value.problem
    assert file_name in str(info.value)


def test_bad_presets_name_the_preset_and_the_unknown_agent(tmp_path: Path) -> None:
    (tmp_path / "presets.toml").write_text('[ops]\ndescription = "x"\nagents = ["ali", "ghost"]\n')
    with pytest.raises(RosterError) as info:
        Roster.load([tmp_path])
    assert info.value.field == "ops.agents"
    assert "ghost" in info.value.problem and "presets.toml" in str(info.value)


def test_missing_user_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RosterError, match="does not exist"):
        Roster.load([tmp_path / "missing"])


def test_agents_dir_setting_splits_on_the_path_separator(tmp_path: Path) -> None:
    import os

    setting = f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}{os.pathsep}"
    assert split_dirs(setting) == [tmp_path / "a", tmp_path / "b"]
    assert split_dirs("") == []
