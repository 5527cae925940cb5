"""`[web]`: the dashboard's listen address, actions and their token, the Host allowlist, the
reverse-proxy settings. Checked with the rest of the config, so `syncd check` judges it."""

from __future__ import annotations

import re
from typing import Any

from syncd.config.model import WebSettings
from syncd.config.toml import Checker

KEYS = ("listen", "actions", "token_file", "allowed_hosts", "base_path", "trust_proxy")
_LISTEN = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]/]+)):(?P<port>[0-9]{1,5})")
# Segments each followed by a slash, then maybe one without: one way to match any path
# (an optional slash inside a repeated group made a failing match exponential in its length).
_BASE_PATH = re.compile(r"/(?:[A-Za-z0-9._~-]+/)*(?:[A-Za-z0-9._~-]+)?")


def parse_listen(text: str, *, allow_any_port: bool = False) -> tuple[str, int] | None:
    """HOST:PORT or [V6]:PORT with a port 1..65535 (0, any free port, on request), else None."""
    m = _LISTEN.fullmatch(text.strip())
    if m is None:
        return None
    port = int(m["port"])
    if not (0 if allow_any_port else 1) <= port <= 65535:
        return None
    return m["v6"] or m["host"], port


def default_hosts(host: str) -> tuple[str, ...]:
    listen = f"[{host}]" if ":" in host else host
    return tuple(dict.fromkeys((listen, "localhost", "127.0.0.1", "[::1]")))


def web_settings(c: Checker, raw: dict[str, Any]) -> WebSettings:
    c.keys("web", raw, KEYS)
    values: dict[str, Any] = {}
    if "listen" in raw:
        text = c.string("web.listen", raw["listen"])
        parsed = None if text is None else parse_listen(text)
        if text is not None and parsed is None:
            c.error("web.listen", f"expected HOST:PORT (port 1-65535), got {c.show(raw['listen'])}")
        if parsed is not None:
            values["host"], values["port"] = parsed
    for key in ("actions", "trust_proxy"):
        if key in raw:
            flag = c.boolean(f"web.{key}", raw[key])
            if flag is not None:
                values[key] = flag
    if "token_file" in raw:
        token = c.path("web.token_file", raw["token_file"])
        if token is not None:
            values["token_file"] = token
            if not token.is_file():  # checked on another machine: `syncd web` refuses then
                c.warn("web.token_file", f"{token} does not exist")
    if values.get("actions") and "token_file" not in values and "token_file" not in raw:
        c.error("web.token_file", "required when web.actions = true")
    if "allowed_hosts" in raw:
        hosts = c.string_list("web.allowed_hosts", raw["allowed_hosts"], nonempty=True)
        if hosts is not None:
            values["allowed_hosts"] = tuple(h.strip().lower() for h in hosts)
    else:
        values["allowed_hosts"] = default_hosts(values.get("host", WebSettings.host))
    if "base_path" in raw:
        base = c.string("web.base_path", raw["base_path"])
        if base is not None and not _BASE_PATH.fullmatch(base):
            c.error("web.base_path", f"expected an absolute URL path like '/syncd', got {base!r}")
        elif base is not None:
            values["base_path"] = "/" + base.strip("/") if base.strip("/") else "/"
    return WebSettings(**values)
