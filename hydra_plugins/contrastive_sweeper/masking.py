"""URL passwords hidden in any text (configs, params, logs): every URL form, so only the storage holds them.

A URL is found where `scheme://` starts a word (line start, white space, a quote, `=`, `(`, `[`, `,`, `<`, `{`,
or `key:`);
it runs to the end of its line or to the next URL. Its authority is split the way `urllib.parse.urlsplit`
splits a netloc: the user info ends at the LAST `@` (a password may hold `@`, a space, quotes; an unencoded
`/` too, which urlsplit would miss), the password after the user's first `:` (the user may be empty:
`redis://:pw@host`). Query parameters named like a password (`?password=...&...`) are hidden too. When in doubt
it hides more than the password (an `@` later on the same line), never less.
"""

from __future__ import annotations

import re

MASK = "***"
URL_START = re.compile(r"(?:(?<![^\s'\"=(\[,<{])|(?<=\w:))[A-Za-z][A-Za-z0-9+.-]*://")
SECRET_KEYS = ("password", "passwd", "pwd", "pass", "secret", "token", "api_key", "apikey")
SECRET_QUERY = re.compile(  # a value runs to the next parameter or a quote (white space included: hide more)
    r"(?P<head>[?&;](?:" + "|".join(SECRET_KEYS) + r")=)(?P<value>[^&;#'\"]*)", re.IGNORECASE
)
USER = re.compile(r"[^:/?#@\s'\"]*")  # the user name: what comes before the password's `:`


def _hide_userinfo(rest: str) -> str:
    """`rest` (a URL after `scheme://`) with the password of its user info as MASK."""
    at = rest.rfind("@")
    if at < 0:
        return rest
    user = USER.match(rest).group()
    colon = len(user)
    if colon >= at or rest[colon] != ":":
        return rest  # `user@host` (no password) or `host:port/...` before a later `@`... with no password shape
    if rest[colon + 1 : at] == MASK:
        return rest
    return f"{rest[: colon + 1]}{MASK}{rest[at:]}"


def _hide_url(rest: str) -> str:
    """One URL's text after `scheme://`: user-info password and secret query values hidden."""
    return SECRET_QUERY.sub(lambda m: m["head"] + (MASK if m["value"] else ""), _hide_userinfo(rest))


def _open_userinfo(region: str) -> bool:
    """`user:` then no `@`: maybe a password that holds `scheme://` (the next "URL" its rest); taken as one, which
    hides a `host:port` URL's port when a URL with a password follows it on the same line (more, never less)."""
    user = USER.match(region).group()
    return region[len(user) : len(user) + 1] == ":" and "@" not in region


def _hide_line(line: str) -> str:
    found = [(m.start(), m.end()) for m in URL_START.finditer(line)]
    starts = []
    for begin, body in found:  # a start inside a previous URL's open user info belongs to that URL
        if starts and _open_userinfo(line[starts[-1][1] : begin]):
            continue
        starts.append((begin, body))
    if not starts:
        return line
    out = [line[: starts[0][0]]]
    for i, (begin, body) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(line)
        out.append(line[begin:body] + _hide_url(line[body:end]))
    return "".join(out)


def hide_passwords(text: str) -> str:
    """`text` with the password of every URL (user info and password-like query values) shown as `***`."""
    return "\n".join(_hide_line(line) for line in str(text).split("\n"))
