"""How the offline model picks tools and fills their arguments from a request.

Tool choice: the request's keyword stems are matched against each tool's name, the enum
values of its parameters and its description (see `tool_score`); a tool is called when it
scores at least `TOOL_THRESHOLD`.

Arguments: walked from the tool's JSON schema. Numbers are read from the request in order
(percentages become fractions, "1.5k"/"2m" are expanded); properties whose name says
rate/percent take the percentages; arrays of numbers take the remaining numbers; enums
take the value the request mentions; free-text properties named like a query take the
request's key words; "expression" takes the arithmetic in the request. Required
properties always get a value that satisfies the schema.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from convergio_server.domain.models.text import keywords, stem, stems

TOOL_THRESHOLD = 2

_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>-)?\$?(?P<num>\d[\d,]*(?:\.\d+)?|\.\d+)\s*(?P<unit>%|percent\b|k\b|m\b|bn\b)?",
    re.IGNORECASE,
)
_EXPRESSION = re.compile(r"[-+(]*\s*\d[\d.\s+\-*/()%^]*\d\s*\)*")
_OPERATOR = re.compile(r"\d\s*[-+*/^%]\s*[\d(]")
_RATE_NAMES = ("rate", "percent", "discount", "interest", "growth", "yield")
_QUERY_NAMES = ("query", "question", "search", "text", "q", "topic", "keywords", "prompt")
# Spelled-out forms of common enum values (financial terms the roster's tools use).
_ENUM_ALIASES: dict[str, tuple[str, ...]] = {
    "npv": ("net present value", "present value", "discounted cash"),
    "irr": ("internal rate of return",),
    "roi": ("return on investment",),
    "cagr": ("compound annual growth", "growth rate", "annual growth"),
    "break_even": ("breakeven", "break-even", "break even"),
    "loan_payment": ("mortgage", "monthly payment", "installment", "loan"),
    "expression": ("calculate", "compute", "evaluate"),
    "future_value": ("be worth", "grow to", "grows to", "compound interest", "end up with"),
}


@dataclass
class _Numbers:
    percents: list[float] = field(default_factory=list)
    plain: list[float] = field(default_factory=list)


def extract_numbers(text: str) -> _Numbers:
    found = _Numbers()
    for match in _NUMBER.finditer(text):
        value = float(match["num"].replace(",", ""))
        if match["sign"]:
            value = -value
        unit = (match["unit"] or "").lower()
        if unit in ("%", "percent"):
            found.percents.append(value / 100.0)
            continue
        value *= {"k": 1e3, "m": 1e6, "bn": 1e9}.get(unit, 1.0)
        found.plain.append(value)
    return found


def extract_expression(text: str) -> str | None:
    """The longest arithmetic expression in `text` that has an operator."""
    best = ""
    for match in _EXPRESSION.finditer(text):
        candidate = match.group(0).strip()
        if _OPERATOR.search(candidate) and len(candidate) > len(best):
            best = candidate
    if not best:
        return None
    # Balance parentheses cut off by the match.
    opened = best.count("(") - best.count(")")
    if opened > 0:
        best += ")" * opened
    elif opened < 0:
        best = "(" * -opened + best
    return best.replace("^", "**")


def _schema_terms(parameters: Mapping[str, Any]) -> tuple[set[str], str]:
    """Enum values (distinctive: the operations a tool offers) and the property text."""
    enum_stems: set[str] = set()
    text: list[str] = []
    for name, prop in (parameters.get("properties") or {}).items():
        if not isinstance(prop, Mapping):
            continue
        resolved = _resolve(prop, parameters)
        text.append(str(name))
        text.append(str(resolved.get("description", "")))
        for value in resolved.get("enum") or ():
            enum_stems |= {stem(p) for p in re.split(r"[_\s-]+", str(value)) if p}
    return enum_stems, " ".join(text)


@dataclass(frozen=True)
class _ToolTerms:
    """What `tool_score` matches a request against, worked out once per tool schema."""

    name_stems: frozenset[str]
    enum_stems: frozenset[str]
    description_stems: frozenset[str]
    haystack: str  # the description and the properties' text, lowercased


# By tool name, description and parameters (AutoGen hands every call fresh copies of the
# schemas, and working out their terms was about 1% of a zero-delay turn).
_TOOL_TERMS: dict[bytes, _ToolTerms] = {}
_TOOL_TERMS_KEPT = 1024


def _tool_terms(name: str, description: str, parameters: Mapping[str, Any]) -> _ToolTerms:
    key = orjson.dumps([name, description, parameters], option=orjson.OPT_SORT_KEYS, default=str)
    found = _TOOL_TERMS.get(key)
    if found is None:
        enum_stems, property_text = _schema_terms(parameters)
        found = _ToolTerms(
            frozenset(stems(name.replace("_", " "))),
            frozenset(enum_stems),
            frozenset(stems(description)),
            (description + " " + property_text).lower(),
        )
        if len(_TOOL_TERMS) >= _TOOL_TERMS_KEPT:
            _TOOL_TERMS.clear()  # schemas made up on the fly: keep the table small
        _TOOL_TERMS[key] = found
    return found


@functools.lru_cache(maxsize=64)
def _request_stems(request: str) -> frozenset[str]:
    """The request's word stems, numbers left out (the same request is scored against each
    tool offered)."""
    return frozenset(s for s in stems(request) if not s[0].isdigit())


def tool_score(
    name: str, description: str, request: str, parameters: Mapping[str, Any] | None = None
) -> int:
    """How strongly `request` asks for the tool. Enum values (the operations it offers)
    count 2 each; name words count 2 each when at least two (or all) of them appear, else
    1; other description words and spelled-out operations count 1. "What will the office
    cost?" does not call `conversation_cost`; "what has this conversation cost?" does."""
    request_stems = _request_stems(request)
    terms = _tool_terms(name, description, parameters or {})
    name_hits = len(request_stems & terms.name_stems)
    name_score = 2 * name_hits if name_hits >= min(2, len(terms.name_stems)) else name_hits
    enum_hits = len(request_stems & terms.enum_stems)
    description_hits = len(
        (request_stems - terms.enum_stems - terms.name_stems) & terms.description_stems
    )
    lowered = request.lower()
    alias_hits = sum(
        1
        for value, aliases in _ENUM_ALIASES.items()
        if value in terms.haystack and any(alias in lowered for alias in aliases)
    )
    return name_score + 2 * enum_hits + description_hits + alias_hits


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved = root.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
        return resolved if isinstance(resolved, Mapping) else {}
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list):
            for option in options:
                if isinstance(option, Mapping) and option.get("type") != "null":
                    return _resolve(option, root)
    return schema


def _enum_choice(values: Sequence[Any], request: str) -> Any:
    lowered = request.lower()
    request_stems = stems(request)
    best: tuple[int, int] = (0, 0)
    choice = values[0]
    for index, value in enumerate(values):
        text = str(value)
        score = 2 * len(request_stems & {stem(p) for p in re.split(r"[_\s-]+", text) if p})
        if re.search(r"\b" + re.escape(text.lower()) + r"\b", lowered):
            score += 3
        score += sum(2 for alias in _ENUM_ALIASES.get(text.lower(), ()) if alias in lowered)
        if (score, -index) > (best[0], -best[1]) and score > 0:
            best = (score, index)
            choice = value
    return choice


def _clamp(value: float, schema: Mapping[str, Any]) -> float:
    if "minimum" in schema:
        value = max(value, float(schema["minimum"]))
    if "maximum" in schema:
        value = min(value, float(schema["maximum"]))
    if "exclusiveMinimum" in schema and value <= float(schema["exclusiveMinimum"]):
        value = float(schema["exclusiveMinimum"]) + 1
    return value


def _default_for(schema: Mapping[str, Any], request: str) -> Any:
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    kind = schema.get("type")
    if "enum" in schema:
        return _enum_choice(schema["enum"], request)
    if kind == "string":
        text = " ".join(keywords(request)) or request.strip() or "-"
        return text[: int(schema.get("maxLength", 500))]
    if kind == "integer":
        return int(_clamp(1, schema))
    if kind == "number":
        return _clamp(0.0, schema)
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return None


def fill_arguments(schema: Mapping[str, Any], request: str) -> dict[str, Any]:
    """Arguments for a tool with parameters `schema`, read from `request`."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    numbers = extract_numbers(request)
    percents = list(numbers.percents)
    plain = list(numbers.plain)
    arguments: dict[str, Any] = {}
    arrays: list[tuple[str, Mapping[str, Any]]] = []
    for name, raw in properties.items():
        prop = _resolve(raw, schema) if isinstance(raw, Mapping) else {}
        kind = prop.get("type")
        lowered = name.lower()
        if "enum" in prop:
            arguments[name] = _enum_choice(prop["enum"], request)
        elif kind == "string":
            if lowered == "expression" or lowered.endswith("_expression"):
                expression = extract_expression(request)
                if expression is not None:
                    arguments[name] = expression
                elif name in required:
                    arguments[name] = "0"
            elif lowered in _QUERY_NAMES or any(q in lowered for q in ("query", "question")):
                text = " ".join(keywords(request)) or request.strip()
                arguments[name] = text[: int(prop.get("maxLength", 1000))] or "-"
            elif name in required:
                arguments[name] = _default_for(prop, request)
        elif kind in ("number", "integer"):
            value: float | None = None
            if any(cue in lowered for cue in _RATE_NAMES) and percents:
                value = percents.pop(0)
            elif name in required and plain:
                value = plain.pop(0)
            if value is None and name in required:
                value = float(_default_for(prop, request))
            if value is not None:
                value = _clamp(value, prop)
                arguments[name] = int(value) if kind == "integer" else value
        elif kind == "array":
            arrays.append((name, prop))
        elif name in required:
            arguments[name] = _default_for(prop, request)
    # Arrays of numbers take what the scalar properties left.
    for name, prop in arrays:
        items = _resolve(prop.get("items") or {}, schema)
        if items.get("type") in ("number", "integer"):
            values: list[Any] = [int(v) if items["type"] == "integer" else v for v in plain]
            plain = []
            if "maxItems" in prop:
                values = values[: int(prop["maxItems"])]
            if values or name in required:
                arguments[name] = values
        elif items.get("type") == "string" and name in required:
            arguments[name] = keywords(request)[:10]
        elif name in required:
            arguments[name] = []
    return arguments
