"""The dashboard's actions (only with `[web] actions = true`): the login that sets the
session cookie, and one POST per operator verb, each checked for its CSRF token and session
and sent to the daemon, which still decides (a web user without the right sees `forbidden`)
and logs it as `<op> by <user> via web from <address>`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from syncd.config.model import WebSettings
from syncd.ctl.client import DaemonError, DaemonUnreachable
from syncd.web.link import DaemonLink
from syncd.web.query import number
from syncd.web.security import SESSION_COOKIE, SESSION_SECONDS, Sessions, client_address, is_https


class Web(Protocol):
    """What an action needs from the web app that routes to it (the app in app.py)."""

    settings: WebSettings
    link: DaemonLink
    sessions: Sessions
    cookie_path: str

    def url(self, path: str) -> str: ...
    def safe_next(self, value: str | None) -> str: ...
    def logged_in(self, request: Request) -> bool: ...
    def page(
        self, request: Request, template: str, ctx: dict[str, Any], status: int = 200
    ) -> Response: ...
    def message(
        self, request: Request, title: str, text: str, status: int, back: str | None = None
    ) -> Response: ...


FAILED_LOGIN_PAUSE = 0.5
MAX_FORM_BYTES = 64 * 1024


class BadInput(ValueError):
    """A form value the action cannot use; its message is shown to the operator."""


def _int(form: dict[str, str], key: str, lo: int, hi: int) -> int:
    text = form.get(key, "").strip()
    value = number(text, signed=True)
    if value is None or not lo <= value <= hi:
        raise BadInput(f"{key}: expected a whole number {lo}..{hi}, got {text!r}")
    return value


def _name(form: dict[str, str], key: str) -> str:
    text = form.get(key, "").strip()
    if not text:
        raise BadInput(f"{key}: required")
    return text


def parse_params(text: str) -> dict[str, Any]:
    """`K=V` words or lines (a bare `K` is a flag), as `syncctl submit --param` takes them."""
    out: dict[str, Any] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not key:
            raise BadInput(f"params: {word!r} is not K=V")
        if key in out:
            raise BadInput(f"params: {key!r} given twice")
        out[key] = value if sep else True
    return out


def _retry(web: Web, form: dict[str, str]) -> tuple[str, dict[str, Any]]:
    task = web.link.call("get", id=_int(form, "id", 1, 2**62))["task"]
    return "submit", {
        "source": task["source"],
        "sync_type": task["sync_type"],
        "params": task["params"],
        "priority": task["priority"],
    }


def _submit(web: Web, form: dict[str, str]) -> tuple[str, dict[str, Any]]:
    args: dict[str, Any] = {
        "source": _name(form, "source"),
        "sync_type": form.get("sync_type", "").strip() or "all",
        "params": parse_params(form.get("params", "")),
    }
    if form.get("priority", "").strip():
        args["priority"] = _int(form, "priority", 0, 9)
    return "submit", args


def _max_workers(web: Web, form: dict[str, str]) -> tuple[str, dict[str, Any]]:
    if form.get("reset"):
        return "config_set", {"reset": True}
    return "config_set", {"max_workers": _int(form, "max_workers", 1, 64)}


Action = Callable[[Web, dict[str, str]], tuple[str, dict[str, Any]]]
ACTIONS: dict[str, Action] = {
    "cancel": lambda w, f: ("cancel", {"ids": [_int(f, "id", 1, 2**62)]}),
    "retry": _retry,
    "submit": _submit,
    "pause": lambda w, f: ("pause", {}),
    "resume": lambda w, f: ("resume", {}),
    "schedule_run": lambda w, f: ("schedule_run", {"name": _name(f, "name")}),
    "schedule_pause": lambda w, f: ("schedule_pause", {"name": _name(f, "name")}),
    "schedule_resume": lambda w, f: ("schedule_resume", {"name": _name(f, "name")}),
    "max_workers": _max_workers,
    "source_pause": lambda w, f: ("source_pause", {"name": _name(f, "name")}),
    "source_resume": lambda w, f: ("source_resume", {"name": _name(f, "name")}),
    "source_reset": lambda w, f: ("source_reset", {"name": _name(f, "name")}),
}


async def form_of(request: Request) -> dict[str, str]:
    """An url-encoded form (every form here is one), at most MAX_FORM_BYTES; the first value
    of a repeated field counts."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadInput(f"form larger than {MAX_FORM_BYTES} bytes")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


async def checked_form(web: Web, request: Request) -> dict[str, str] | Response:
    """The posted form when it carries this browser's CSRF token, else the error page."""
    try:
        form = await form_of(request)
    except BadInput as exc:
        return web.message(request, "Not done", str(exc), 413)
    if not Sessions.csrf_ok(request, form.get("csrf")):
        return web.message(request, "Form expired", "Reload the page and try again.", 403)
    return form


async def login_page(web: Web, request: Request) -> Response:
    if not web.settings.actions:
        return web.message(request, "Actions are disabled", "Set [web] actions = true.", 404)
    return web.page(
        request, "login.html", {"next": web.safe_next(request.query_params.get("next"))}
    )


async def login(web: Web, request: Request) -> Response:
    if not web.settings.actions:
        return web.message(request, "Actions are disabled", "Set [web] actions = true.", 404)
    form = await checked_form(web, request)
    if isinstance(form, Response):
        return form
    nxt = web.safe_next(form.get("next"))
    if not web.sessions.check_token(form.get("token", "")):
        await asyncio.sleep(FAILED_LOGIN_PAUSE)
        ctx = {"next": nxt, "error": "That token is not the one in the token file."}
        return web.page(request, "login.html", ctx, 401)
    response = RedirectResponse(nxt, 303)
    response.set_cookie(
        SESSION_COOKIE,
        web.sessions.new_session(),
        max_age=SESSION_SECONDS,
        path=web.cookie_path,
        httponly=True,
        samesite="strict",
        secure=is_https(request, web.settings.trust_proxy),
    )
    return response


async def logout(web: Web, request: Request) -> Response:
    form = await checked_form(web, request)
    if isinstance(form, Response):
        return form
    response = RedirectResponse(web.url("/"), 303)
    response.delete_cookie(SESSION_COOKIE, path=web.cookie_path)
    return response


async def act(web: Web, request: Request) -> Response:
    name = request.path_params["name"]
    build = ACTIONS.get(name)
    if not web.settings.actions or build is None:
        return web.message(request, "Not found", f"No action {name!r} here.", 404)
    form = await checked_form(web, request)
    if isinstance(form, Response):
        return form
    nxt = web.safe_next(form.get("next"))
    if not web.logged_in(request):
        return RedirectResponse(web.url("/login") + "?" + urlencode({"next": nxt}), 303)
    via = f"web from {client_address(request, web.settings.trust_proxy)}"
    try:
        op, args = await run_in_threadpool(build, web, form)
        await run_in_threadpool(web.link.act, op, via, **args)
    except BadInput as exc:
        return web.message(request, "Not done", str(exc), 400, nxt)
    except DaemonError as exc:
        status = 403 if exc.code == "forbidden" else 409
        return web.message(request, exc.code, exc.message, status, nxt)
    except DaemonUnreachable as exc:
        return web.message(request, "Daemon unreachable", str(exc), 503, nxt)
    return RedirectResponse(nxt, 303)
