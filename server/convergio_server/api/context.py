"""Per-call state shared by the call pipeline and servicers through context variables."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from convergio_server.domain.auth import Principal
from convergio_server.domain.errors import Unauthenticated


@dataclass
class CallInfo:
    """What the access log reports about one call."""

    method: str
    request_id: str
    code: str = "OK"
    tenant_id: str = "-"
    principal: str = "-"
    extra: dict[str, str] = field(default_factory=dict)
    span: Any = None  # the call's trace span, when tracing is on


call_info_var: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar(
    "call_info", default=None
)
principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None
)


def current_principal() -> Principal:
    """The authenticated caller; servicers call this, the call pipeline sets it."""
    principal = principal_var.get()
    if principal is None:
        raise Unauthenticated("this call needs an API key")
    return principal
