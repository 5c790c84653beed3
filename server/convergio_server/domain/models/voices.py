"""How the offline model sounds in each role.

A voice is chosen from the role an agent's system message states ("You are Amy, Chief
Financial Officer ..."): the first voice (in this file's order, most specific first) whose
cues appear in the role wins, then the
whole system message is tried, then the general voice. Templates take `{topic}` (the
request's key words) and are picked by a stable hash of the request, so one request
always gets the same answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Voice:
    name: str
    cues: tuple[str, ...]
    openers: tuple[str, ...]
    lenses: tuple[str, ...]
    closers: tuple[str, ...]


VOICES: tuple[Voice, ...] = (
    Voice(
        "synthesis",
        ("chief of staff", "synthes"),
        (
            "Pulling the threads together on {topic}:",
            "Here is where we stand on {topic}:",
        ),
        (
            "The team's views converge on a clear objective, an owner for each workstream "
            "and a short list of decisions we need this week.",
            "My synthesis: agree the goal for {topic}, size the cost and the risk, then "
            "commit to a plan with dates and owners.",
            "Open questions remain on scope and budget; I suggest we close them before "
            "anyone starts execution.",
        ),
        (
            "Next step: I will circulate a one-page summary with decisions and owners.",
            "Next step: confirm the decision and I will coordinate the follow-up.",
        ),
    ),
    Voice(
        "legal",
        ("legal", "counsel", "law", "contract", "regulat"),
        (
            "From a legal perspective on {topic}:",
            "The legal considerations for {topic}:",
        ),
        (
            "We need to check the contracts, the regulatory obligations and the liability we "
            "take on.",
            "Data protection rules apply if personal data is involved; consent and retention "
            "must be clear.",
        ),
        ("Next step: a short legal review before anything is signed.",),
    ),
    Voice(
        "financial",
        ("financ", "cfo", "budget", "accounting", "treasury"),
        (
            "From the financial side of {topic}:",
            "Looking at {topic} through the numbers:",
        ),
        (
            "I would size it in money terms first: upfront cost, expected return, payback "
            "period and the effect on cash flow.",
            "Let us model a base, a downside and an upside case and check the margin impact "
            "in each before committing capital.",
            "The decision hinges on unit economics; if the return does not clear our cost of "
            "capital, we should not fund it.",
        ),
        (
            "Next step: share cost and revenue estimates and I will run NPV, ROI and break-even.",
            "Next step: I will prepare a budget with a contingency reserve of about ten percent.",
        ),
    ),
    Voice(
        "security",
        ("secur", "risk", "threat", "complian", "privacy"),
        (
            "From a security and risk standpoint on {topic}:",
            "Before we proceed with {topic}, the risk picture:",
        ),
        (
            "The main exposures are data access, third-party dependencies and the blast "
            "radius if a credential leaks.",
            "I would threat-model it first: who could abuse it, what they would gain, and "
            "which control stops them.",
            "We need least-privilege access, audit logging and an incident response plan "
            "before this reaches production.",
        ),
        (
            "Next step: a short risk register with likelihood, impact and an owner per risk.",
            "Next step: I will review the controls and flag anything that needs approval.",
        ),
    ),
    Voice(
        "marketing",
        ("marketing", "brand", "growth", "go-to-market"),
        (
            "From the marketing angle on {topic}:",
            "How customers will see {topic}:",
        ),
        (
            "Positioning comes first: which customer, which problem, and why us over the "
            "alternative.",
            "I would test the message on a small segment and scale the channels that convert.",
        ),
        ("Next step: a positioning statement and a two-week channel test.",),
    ),
    Voice(
        "strategy",
        ("strateg", "market analysis", "mckinsey", "competit", "business model"),
        (
            "Strategically, {topic} comes down to where we can win:",
            "Framing {topic} as a strategic choice:",
        ),
        (
            "I would structure it as a decision tree: market attractiveness, our right to "
            "win, and the cost of waiting.",
            "The market signals matter most: size, growth, competitive intensity and how "
            "customers buy today.",
            "Three options stand out: move now, run a focused pilot, or partner; each has a "
            "different risk and payoff profile.",
        ),
        (
            "Next step: a one-page options analysis with a recommendation.",
            "Next step: validate the top hypothesis with five customer interviews.",
        ),
    ),
    Voice(
        "questioning",
        ("first-principles", "first principles", "socratic", "questioning", "philosoph"),
        (
            "Let us question {topic} from first principles:",
            "Before answering, what are we really asking about {topic}?",
        ),
        (
            "What problem are we solving, for whom, and how would we know it is solved?",
            "Which assumption, if wrong, would change the whole answer? That is the one to "
            "test first.",
            "If we strip away convention, what must be true for this to succeed?",
        ),
        (
            "My suggestion: write down the assumptions and rank them by how much we are "
            "betting on each.",
            "My suggestion: restate the goal in one sentence that everyone agrees with.",
        ),
    ),
    Voice(
        "data",
        ("data scien", "machine learning", "statist", "data"),
        (
            "What the data says about {topic}:",
            "A data science view of {topic}:",
        ),
        (
            "I would start from the question, check the data we have, and only then pick a model.",
            "Sample size and bias decide how far we can trust any result.",
        ),
        ("Next step: an exploratory analysis with the key distributions.",),
    ),
    Voice(
        "metrics",
        ("dashboard", "metric", "performance", "monitor", "kpi", "analytics"),
        (
            "On measuring {topic}:",
            "What the data should tell us about {topic}:",
        ),
        (
            "I would track a handful of KPIs: one outcome metric, two leading indicators and "
            "a guardrail metric.",
            "We need a baseline before we change anything, otherwise no dashboard can show "
            "the effect.",
            "Alert thresholds should sit on trends, not single points, to avoid noise.",
        ),
        (
            "Next step: I will draft the dashboard with targets and owners per metric.",
            "Next step: agree the baseline period and the review cadence.",
        ),
    ),
    Voice(
        "workflow",
        ("workflow", "orchestrat", "execution plan", "operations", "process"),
        (
            "Turning {topic} into an executable plan:",
            "For execution of {topic}:",
        ),
        (
            "I would break it into steps with clear inputs, outputs, owners and "
            "dependencies, and run independent steps in parallel.",
            "Each step needs a timeout, a retry rule and, where the risk is high, an "
            "approval gate.",
            "The critical path decides the date; everything else can float.",
        ),
        (
            "Next step: I will lay out the workflow with its dependencies and approval gates.",
            "Next step: assign owners and start the first two steps in parallel.",
        ),
    ),
    Voice(
        "coordination",
        ("coordinat", "pattern", "collaborat", "facilitat"),
        (
            "On how the team should work on {topic}:",
            "A coordination view of {topic}:",
        ),
        (
            "The right pattern is a small core team with clear hand-offs and one decision owner.",
            "We should decide who consults whom, and where work runs in parallel versus in "
            "sequence.",
            "Shared context matters: one source of truth and a regular sync keep everyone aligned.",
        ),
        (
            "Next step: I will propose the hand-offs and the sync cadence.",
            "Next step: name the decision owner and the contributors.",
        ),
    ),
    Voice(
        "technical",
        ("architect", "engineering", "devops", "infrastructure", "software", "technical"),
        (
            "Technically, {topic} looks like this:",
            "An engineering view of {topic}:",
        ),
        (
            "I would keep the architecture simple: few moving parts, clear interfaces, and "
            "observability from day one.",
            "The main trade-offs are build versus buy, latency versus cost, and how it "
            "scales and fails.",
        ),
        ("Next step: a short design document with the options and a recommendation.",),
    ),
    Voice(
        "people",
        ("human resources", "hr", "talent", "people"),
        (
            "On the people side of {topic}:",
            "How {topic} affects the team:",
        ),
        (
            "Roles, skills and workload need to be clear before we add any new commitment.",
            "Change lands better with early communication and a named contact for questions.",
        ),
        ("Next step: map the roles and the skills gap.",),
    ),
    Voice(
        "design",
        ("ux", "user experience", "design", "research"),
        (
            "From the user's point of view on {topic}:",
            "A design view of {topic}:",
        ),
        (
            "I would watch five users try it before debating solutions.",
            "The simplest flow that solves the main job usually wins.",
        ),
        ("Next step: a quick prototype and a round of usability tests.",),
    ),
)

GENERAL = Voice(
    "general",
    (),
    ("On {topic}:", "Regarding {topic}:"),
    (
        "I would clarify the goal, list the options, and pick the one with the best balance "
        "of value, cost and risk.",
        "The key facts are the constraints, the stakeholders and the deadline.",
    ),
    ("Next step: agree the goal and the owner.",),
)


def voice_for(role: str, system_text: str) -> Voice:
    """The voice whose cues appear in the role, else in the whole system text."""
    for text in (role.lower(), system_text.lower()):
        if not text:
            continue
        for voice in VOICES:
            # Cues match at the start of a word: "hr" must not match "three".
            if any(re.search(r"\b" + re.escape(cue), text) for cue in voice.cues):
                return voice
    return GENERAL


# Sentences of the templates that do not depend on the request: the offline model never
# quotes them from another agent's message as if they were content.
TEMPLATE_SENTENCES: frozenset[str] = frozenset(
    sentence.strip()
    for voice in (*VOICES, GENERAL)
    for template in (*voice.openers, *voice.lenses, *voice.closers)
    if "{topic}" not in template
    for sentence in re.split(r"(?<=[.!?])\s+", template)
)
