"""Which tenant a request acts for.

Requests name their tenant in the ``x-voice-tenant`` metadata key. The gateway (which checks credentials) sets it
for external clients; in embedded mode a request without it acts for the default tenant. The key may appear once:
two values would leave it to chance (or to a proxy's ordering) whose data a request touches.
"""

from __future__ import annotations

from collections.abc import Sequence

from voice_common.config import TENANT_PATTERN
from voice_common.errors import InvalidArgument, Unauthenticated, quoted
from voice_common.observability import tenant_var

TENANT_METADATA_KEY = "x-voice-tenant"


class TenantResolver:
    def __init__(self, default_tenant: str, require_tenant: bool) -> None:
        self._default = default_tenant
        self._require = require_tenant

    def resolve(self, values: Sequence[str]) -> str:
        """The tenant named by the request's ``x-voice-tenant`` values (every one it sent, in order)."""
        if len(values) > 1:
            raise InvalidArgument(
                f"the {TENANT_METADATA_KEY!r} metadata key was sent {len(values)} times; send it once, naming one "
                "tenant"
            )
        value = values[0] if values else ""
        if value == "":
            if self._require:
                raise Unauthenticated(
                    f"this server needs the tenant in the {TENANT_METADATA_KEY!r} metadata key "
                    "(call through the gateway, or set it)"
                )
            return self._default
        if not TENANT_PATTERN.match(value):
            raise InvalidArgument(
                f"{TENANT_METADATA_KEY} {quoted(value)} is not a tenant id: use 1-63 characters of a-z, 0-9, '-' or '_'"
            )
        return value


def current_tenant() -> str:
    """The tenant of the RPC being handled (set by the server's interceptor)."""
    tenant = tenant_var.get()
    if not tenant:
        raise RuntimeError("no tenant in context: is the tenancy interceptor installed?")
    return tenant
