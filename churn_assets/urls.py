"""URLs from the environment that may carry credentials: how to use them, how to show them.

The alert webhook (``CHURN_ALERT_WEBHOOK_URL``), the MLflow tracking URI
(``MLFLOW_TRACKING_URI``) and the warehouse (``CHURN_WAREHOUSE_URL``) may each hold
``user:password@`` (and a Postgres URL a ``?password=``). Their owner means them to be
used, and never to be read back: every one of these URLs that goes into a log line, an
error, Dagster metadata or CLI output goes through :func:`mask_url`, and a message written
by a library about such a URL goes through :func:`mask_secrets`.

Pure standard library, no Dagster: every layer may import it.
"""

from __future__ import annotations

import base64
import contextlib
import re
from urllib.parse import unquote, urlsplit

MASK = "***"

_QUERY_PASSWORD = re.compile(r"(?i)([?&][^=&#]*password=)([^&#]+)")
_DELIMITERS = re.compile(r"[/?#@]")
_MIN_PIECE = 3  # a shorter piece of a broken password is masked only where it is quoted


def mask_url(url: str, *, host_only: bool = False) -> str:
    """``url`` safe to show: its password (userinfo and ``?password=``) replaced by ``***``.

    ``host_only`` keeps only ``scheme://host:port``: a webhook's path is often its secret.
    Never raises. The userinfo is taken to end at the URL's last ``@``, so a password holding
    an unencoded ``/``, ``?``, ``#`` or ``@`` is masked whole (libpq accepts some of these);
    a URL with an ``@`` further on (``https://u:p@h/x?to=a@b``) is masked more than needed,
    never less.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url  # a plain path: nothing that could carry a password
    if host_only:  # as urllib reads the host; any piece of a password in it is then masked
        return mask_secrets(_scheme_and_host(url), url)
    userinfo, at, after = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if at and colon and password:
        rest = f"{user}:{MASK}@{after}"
    return f"{scheme}://{_QUERY_PASSWORD.sub(lambda m: m.group(1) + MASK, rest)}"


def mask_secrets(text: str, url: str) -> str:
    """``text`` (a driver's or a library's message about ``url``) without ``url``'s secrets.

    Messages such as urllib's ``nonnumeric port: 's3cr3t@host'`` or libpq's ``invalid
    integer value "pa" for connection option "port"`` quote pieces of a malformed URL, so
    the password is replaced raw and percent-decoded, and so is each piece of it between
    URL delimiters (a piece shorter than three characters only where it stands quoted).
    """
    text = text.replace(url, mask_url(url))
    secrets = {s for s in _passwords(url) if s}
    pieces = {p for s in secrets for p in _DELIMITERS.split(s) if p} - secrets
    for secret in sorted(secrets, key=len, reverse=True):  # longest first: pieces after
        text = text.replace(secret, MASK)
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= _MIN_PIECE:
            text = text.replace(piece, MASK)
        else:
            text = text.replace(f"'{piece}'", f"'{MASK}'").replace(f'"{piece}"', f'"{MASK}"')
    return text


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``(url without its userinfo, username, password)``, the latter two percent-decoded.

    Parsed as ``urllib.parse`` (and requests) parse a URL: ``username`` and ``password`` are
    None when the URL has no userinfo, ``password`` when it has no ``:``.
    """
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None, None
    user, colon, password = userinfo.partition(":")
    start = url.index("//") + 2  # the netloc follows; keep the rest of the URL as written
    bare = url[:start] + host + url[start + len(parts.netloc) :]
    return bare, unquote(user), unquote(password) if colon else None


def basic_auth(username: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP basic auth (RFC 7617, UTF-8)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _scheme_and_host(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed ``[``
        return f"{url.partition('://')[0]}://?"
    host = parts.hostname or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number
        port = ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}{port}"


def _passwords(url: str) -> set[str]:
    """Every form the URL's password may take in a message: as :func:`mask_url` reads it
    (to the last ``@``), as :func:`split_credentials` does, and each ``?password=``."""
    found: set[str] = set()
    rest = url.partition("://")[2]
    userinfo, at, _ = rest.rpartition("@")
    if at and ":" in userinfo:
        found.add(userinfo.partition(":")[2])
    with contextlib.suppress(ValueError):  # an unclosed ``[``: the rule above covers it
        found.add(urlsplit(url).password or "")
    found |= {match.group(2) for match in _QUERY_PASSWORD.finditer(url)}
    return found | {unquote(secret) for secret in found}
