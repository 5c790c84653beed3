"""Servicers, one module per service. Importing a module registers its factory in
`convergio_server.api.services.FACTORIES`."""

from convergio_server.api.servicers import (
    conversation,  # noqa: F401
    cost,  # noqa: F401
    flag,  # noqa: F401
    flagd,  # noqa: F401
)
