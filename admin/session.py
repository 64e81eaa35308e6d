"""The dashboard's cookie (API.md "Dashboard": asked for the token once, kept in an HttpOnly,
SameSite=Strict cookie).

Pure. The cookie holds a value derived from the token, never the token: whoever reads it (a
proxy's log, a browser profile) can look at the dashboard, which is read-only, but cannot
write through the admin API, whose requests still need the token itself. The value changes
with the token, so a new token ends every dashboard session.
"""

from __future__ import annotations

import hashlib
import hmac
from http.cookies import CookieError, SimpleCookie

COOKIE = "tlsgate_dashboard"
#: The paths the cookie is sent to, and the only ones it opens.
PATH = "/ui"
#: Browsers forget it after a week (the token itself does not expire).
MAX_AGE = 7 * 24 * 3600


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"tlsgate dashboard session", hashlib.sha256).hexdigest()


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def has_session(cookie_header: str, token: str) -> bool:
    """Whether a request's `Cookie` header carries this token's session."""
    try:
        cookies = SimpleCookie(cookie_header)
    except CookieError:
        return False
    morsel = cookies.get(COOKIE)
    return morsel is not None and hmac.compare_digest(
        morsel.value.encode(), session_value(token).encode()
    )


def set_cookie(token: str, *, secure: bool) -> str:
    """The `Set-Cookie` value that starts a session (`Secure` when the admin API is HTTPS)."""
    flags = f"Path={PATH}; Max-Age={MAX_AGE}; HttpOnly; SameSite=Strict"
    return f"{COOKIE}={session_value(token)}; {flags}" + ("; Secure" if secure else "")


def clear_cookie(*, secure: bool) -> str:
    flags = f"Path={PATH}; Max-Age=0; HttpOnly; SameSite=Strict"
    return f"{COOKIE}=; {flags}" + ("; Secure" if secure else "")


def is_dashboard(path: str) -> bool:
    return path == PATH or path.startswith(PATH + "/")


#: Dashboard paths anyone may reach: the login form, the logout, the vendored assets.
OPEN_PATHS = frozenset({"/ui/login", "/ui/logout"})
STATIC = "/ui/static/"


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(STATIC)
