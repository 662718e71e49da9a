"""Who may use ``/fusebox/*``: the admin key when one is set, else loopback only.

DESIGN.md §7: probe endpoints need no key; the admin API needs the bearer key
named by ``admin.key_env``, and without one it answers loopback clients only.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import TYPE_CHECKING

from providers.errors import AuthError, ClientError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from litestar.types import Scope


class AdminForbiddenError(ClientError):
    """The admin API was called from elsewhere than loopback without a key set."""

    http_status = 403
    error_type = "permission_error"
    code = "admin_loopback_only"


def _is_loopback(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


def check_admin(
    scope: Scope, headers: Mapping[str, str], admin_key: str | None
) -> None:
    """Raise unless this request may use the admin API.

    Raises:
        AuthError: a key is configured and the request does not carry it (401).
        AdminForbiddenError: no key is configured and the client is not loopback.
    """
    if admin_key is None:
        if not _is_loopback(scope):
            raise AdminForbiddenError(
                "the admin API answers loopback clients only (set admin.key_env)"
            )
        return
    auth = headers.get("authorization", "")
    scheme, _, presented = auth.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), admin_key.encode()
    ):
        raise AuthError("the admin API needs `Authorization: Bearer <admin key>`")
