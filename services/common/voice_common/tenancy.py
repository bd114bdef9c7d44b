"""Which tenant a request acts for.

Requests name their tenant in the ``x-voice-tenant`` metadata key. The gateway (which checks credentials) sets it
for external clients; in embedded mode a request without it acts for the default tenant.
"""

from __future__ import annotations

from voice_common.config import TENANT_PATTERN
from voice_common.errors import InvalidArgument, Unauthenticated
from voice_common.observability import tenant_var

TENANT_METADATA_KEY = "x-voice-tenant"


class TenantResolver:
    def __init__(self, default_tenant: str, require_tenant: bool) -> None:
        self._default = default_tenant
        self._require = require_tenant

    def resolve(self, value: str | None) -> str:
        if value is None or value == "":
            if self._require:
                raise Unauthenticated(
                    f"this server needs the tenant in the {TENANT_METADATA_KEY!r} metadata key "
                    "(call through the gateway, or set it)"
                )
            return self._default
        if not TENANT_PATTERN.match(value):
            raise InvalidArgument(
                f"{TENANT_METADATA_KEY} {value!r} is not a tenant id: use 1-63 characters of a-z, 0-9, '-' or '_'"
            )
        return value


def current_tenant() -> str:
    """The tenant of the RPC being handled (set by the server's interceptor)."""
    tenant = tenant_var.get()
    if not tenant:
        raise RuntimeError("no tenant in context: is the tenancy interceptor installed?")
    return tenant
