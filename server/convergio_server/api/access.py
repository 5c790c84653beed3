"""Which roles may call which method. `admin` may call everything."""

from __future__ import annotations

from convergio_server.domain.auth import Principal, Role

_ALL = frozenset({Role.MEMBER, Role.OPERATOR, Role.APPROVER})
_USERS = frozenset({Role.MEMBER, Role.OPERATOR})
_OPERATORS = frozenset({Role.OPERATOR})
_APPROVERS = frozenset({Role.APPROVER})

# Per service: the roles for reads, the roles for everything else, and exceptions by method.
# An exception must match any finer check the servicer makes, or the refusal here names
# roles that the servicer would then refuse too.
_SERVICES: dict[str, tuple[frozenset[Role], frozenset[Role], dict[str, frozenset[Role]]]] = {
    "convergio.conversation.v1.ConversationService": (_USERS, _USERS, {}),
    "convergio.workflow.v1.WorkflowService": (_USERS, _USERS, {}),
    "convergio.approval.v1.ApprovalService": (_ALL, _APPROVERS, {}),
    "convergio.flag.v1.FlagService": (_ALL, _OPERATORS, {}),
    "convergio.cost.v1.CostService": (
        _USERS,
        _OPERATORS,
        {"ListBudgets": _OPERATORS, "ListCircuitBreakers": _OPERATORS},
    ),
    "flagd.evaluation.v1.Service": (_ALL, _ALL, {}),
}
_READ_PREFIXES = ("Get", "List", "Watch", "Evaluate", "Stream", "Resolve", "Event")


class AccessPolicy:
    def __init__(self) -> None:
        self._cache: dict[str, frozenset[Role]] = {}

    def roles_for(self, method: str) -> frozenset[Role]:
        """Roles (besides admin) allowed to call `/package.Service/Method`."""
        cached = self._cache.get(method)
        if cached is not None:
            return cached
        _, service, name = method.split("/", 2) if method.count("/") == 2 else ("", "", "")
        entry = _SERVICES.get(service)
        if entry is None:
            roles: frozenset[Role] = frozenset()
        else:
            reads, writes, overrides = entry
            roles = overrides.get(name) or (reads if name.startswith(_READ_PREFIXES) else writes)
        self._cache[method] = roles
        return roles

    def check(self, method: str, principal: Principal) -> None:
        principal.require(self.roles_for(method), method.rsplit("/", 1)[-1])
