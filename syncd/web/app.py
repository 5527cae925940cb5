"""`syncd web`: the Starlette application (pages, live events, /metrics, /healthz, actions)
and the process that serves it. Every daemon read runs in a worker thread over the blocking
client; the event loop only renders and streams."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from syncd.config.model import WebSettings
from syncd.ctl.client import Client, DaemonError, DaemonUnreachable
from syncd.ctl.metrics import CONTENT_TYPE, exposition
from syncd.web import actions, history, views
from syncd.web.link import DaemonLink
from syncd.web.query import number
from syncd.web.security import CSRF_COOKIE, SESSION_COOKIE, Guard, Sessions, is_https
from syncd.web.sse import Hub, frame
from syncd.web.templating import environment

FOLLOW_IDLE_SECONDS = 1.0  # how soon a live log's thread notices its browser left
# Live logs followed at once: each holds a daemon connection, and the daemon allows one
# user 64; past this the page still updates, only its log is not followed.
MAX_LIVE_LOGS = 32
# Each live page: the sections a change re-renders, by element id and partial template.
LIVE = {
    "overview": {
        "pool": "_pool.html",
        "running": "_running.html",
        "queue": "_queue.html",
        "finished": "_finished.html",
        "sources": "_sources.html",
        "charts": "_charts.html",
    },
    "schedules": {"schedule-table": "_schedules.html"},
    "task": {"task-fields": "_task.html"},
}


class Web:
    """The application's state: settings, the daemon link, the templates, the live hub."""

    def __init__(self, settings: WebSettings, socket_path: Path, token: str | None):
        self.settings = settings
        self.link = DaemonLink(socket_path)
        self.sessions = Sessions(token)
        self.env = environment()
        self.hub = Hub(self.link, self.fragments)
        self.live_logs = threading.BoundedSemaphore(MAX_LIVE_LOGS)
        self.base = "" if settings.base_path == "/" else settings.base_path
        self.cookie_path = self.base or "/"

    # -- helpers ------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base + path

    def safe_next(self, value: str | None) -> str:
        """A redirect target inside this site only (no `//host`, no scheme)."""
        ok = value is not None and value.startswith(self.url("/")) and not value.startswith("//")
        if ok and value is not None and not any(c in value for c in "\\\r\n"):
            return value
        return self.url("/")

    def logged_in(self, request: Request) -> bool:
        return self.sessions.valid(request.cookies.get(SESSION_COOKIE))

    def common(self, request: Request | None) -> dict[str, Any]:
        csrf = ""
        if request is not None:
            csrf = request.cookies.get(CSRF_COOKIE) or request.state.new_csrf
        return {
            "url": self.url,
            "actions": self.settings.actions,
            "logged_in": request is not None and self.logged_in(request),
            "csrf": csrf,
            "here": _here(request) if request is not None else "",
        }

    def page(
        self, request: Request, template: str, ctx: dict[str, Any], status: int = 200
    ) -> Response:
        fresh = request.cookies.get(CSRF_COOKIE) is None
        request.state.new_csrf = Sessions.new_csrf() if fresh else ""
        html = self.env.get_template(template).render({**self.common(request), **ctx})
        response = HTMLResponse(html, status, headers={"cache-control": "no-store"})
        if fresh:
            response.set_cookie(
                CSRF_COOKIE,
                request.state.new_csrf,
                path=self.cookie_path,
                httponly=True,
                samesite="strict",
                secure=is_https(request, self.settings.trust_proxy),
            )
        return response

    def message(
        self,
        request: Request,
        title: str,
        text: str,
        status: int,
        back: str | None = None,
    ) -> Response:
        ctx = {"title": title, "text": text, "back": back or self.url("/")}
        return self.page(request, "message.html", ctx, status)

    def fragments(self, key: str) -> dict[str, str]:
        """The live sections of page `key`, rendered once for every listener. Forms in them
        carry an empty CSRF field that the page's script fills from its own."""
        kind, _, arg = key.partition(":")
        if kind == "overview":
            ctx = views.overview(self.link)
        elif kind == "schedules":
            ctx = views.schedules_page(self.link)
        else:
            ctx = views.task_page(self.link, int(arg), with_log=False)
        ctx = {**self.common(None), **ctx}
        return {eid: self.env.get_template(t).render(ctx) for eid, t in LIVE[kind].items()}

    async def read(self, fn: Any, *args: Any) -> Any:
        return await run_in_threadpool(fn, self.link, *args)


def create_app(settings: WebSettings, socket_path: Path, token: str | None = None) -> Starlette:
    web = Web(settings, socket_path, token)

    async def guarded(request: Request, fn: Any, *args: Any) -> Any:
        try:
            return await web.read(fn, *args)
        except DaemonUnreachable as exc:
            raise _Down(str(exc)) from None

    async def overview(request: Request) -> Response:
        after = number(request.query_params.get("queue_after"))
        ctx = await guarded(request, views.overview, after)
        return web.page(request, "overview.html", {**ctx, "live": "overview"})

    async def task(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        try:
            ctx = await guarded(request, views.task_page, task_id)
        except DaemonError as exc:
            return web.message(request, exc.code, exc.message, 404)
        return web.page(request, "task.html", {**ctx, "live": f"task:{task_id}"})

    async def history_page(request: Request) -> Response:
        q = history.Query.parse(request.query_params)
        ctx = await guarded(request, history.page, q)
        return web.page(request, "history.html", ctx, 400 if q.errors else 200)

    async def history_export(request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind not in history.EXPORT_KINDS:  # it is also the file name's extension
            return web.message(request, "Not found", f"No export as {kind!r}: csv or json.", 404)
        q = history.Query.parse(request.query_params)
        try:
            body, media = await guarded(request, history.export, q, kind)
        except (ValueError, DaemonError) as exc:
            return PlainTextResponse(f"{exc}\n", 400)
        disposition = f'attachment; filename="syncd-history.{kind}"'
        return Response(body, media_type=media, headers={"content-disposition": disposition})

    async def schedules(request: Request) -> Response:
        ctx = await guarded(request, views.schedules_page)
        return web.page(request, "schedules.html", {**ctx, "live": "schedules"})

    async def freshness(request: Request) -> Response:
        ctx = await guarded(request, views.freshness_page)
        return web.page(request, "freshness.html", ctx)

    async def routes(request: Request) -> Response:
        ctx = await guarded(request, views.routes_page)
        source = request.query_params.get("source", "").strip()
        if source:
            form = {
                "source": source,
                "sync_type": request.query_params.get("sync_type", "").strip(),
                "params": request.query_params.get("params", ""),
            }
            ctx["form"] = form
            try:
                args: dict[str, Any] = {
                    "source": source,
                    "params": actions.parse_params(form["params"]),
                }
                if form["sync_type"]:
                    args["sync_type"] = form["sync_type"]
                ctx["resolved"] = await run_in_threadpool(web.link.call, "resolve", **args)
            except (DaemonError, actions.BadInput) as exc:
                ctx["resolve_error"] = str(exc)
        return web.page(request, "routes.html", ctx)

    async def metrics(request: Request) -> Response:
        try:
            result = await run_in_threadpool(web.link.call, "metrics")
        except (DaemonUnreachable, DaemonError) as exc:
            return PlainTextResponse(f"# daemon unreachable: {exc}\n", 503)
        return Response(exposition(result), media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        ok, body = await run_in_threadpool(web.link.health)
        headers = {"cache-control": "no-store"}
        return JSONResponse(body, 200 if ok else 503, headers=headers)

    async def events(request: Request) -> Response:
        page = request.query_params.get("page", "")
        key = page
        extra = None
        if page == "task":
            task_id = number(request.query_params.get("id"))
            if task_id is None:
                return PlainTextResponse("id: a task id is required\n", 400)
            key = f"task:{task_id}"
            # A reconnecting browser says where its log ended; the page's offset otherwise.
            resume = number(request.headers.get("last-event-id"))
            offset = (
                resume if resume is not None else number(request.query_params.get("log_offset"))
            )
            if offset is not None:
                extra = follow_log(web, task_id, offset)
        elif page not in LIVE:
            return PlainTextResponse(f"page: one of {', '.join(LIVE)}\n", 400)
        return StreamingResponse(
            web.hub.stream(key, extra),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def down(request: Request, exc: Exception) -> Response:
        return web.message(request, "Daemon unreachable", str(exc), 503, request.url.path)

    async def wrap_login_page(request: Request) -> Response:
        return await actions.login_page(web, request)

    async def wrap_login(request: Request) -> Response:
        return await actions.login(web, request)

    async def wrap_logout(request: Request) -> Response:
        return await actions.logout(web, request)

    async def wrap_act(request: Request) -> Response:
        return await actions.act(web, request)

    static = resources.files("syncd.web") / "static"
    inner: list[BaseRoute] = [
        Route("/", overview),
        Route("/tasks/{task_id:int}", task),
        Route("/history", history_page),
        Route("/history.{kind:str}", history_export),
        Route("/schedules", schedules),
        Route("/routes", routes),
        Route("/freshness", freshness),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/events", events),
        Route("/login", wrap_login_page, methods=["GET"]),
        Route("/login", wrap_login, methods=["POST"]),
        Route("/logout", wrap_logout, methods=["POST"]),
        Route("/actions/{name:str}", wrap_act, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(static)), name="static"),
    ]
    routes_: list[BaseRoute] = inner
    if web.base:
        base = web.base

        async def to_base(request: Request) -> Response:
            return RedirectResponse(base + "/", 308)

        routes_ = [Route(base, to_base), Mount(base, routes=inner)]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        import asyncio

        web.hub.start(asyncio.get_running_loop())
        yield
        web.hub.stop()

    app = Starlette(
        routes=routes_,
        lifespan=lifespan,
        exception_handlers={_Down: down},
    )
    app.state.web = web
    app.add_middleware(Guard, allowed_hosts=settings.allowed_hosts)
    return app


def _here(request: Request) -> str:
    """This page's path and query: where an action on it returns to."""
    query = request.url.query
    return request.url.path + ("?" + query if query else "")


class _Down(Exception):
    """The daemon did not answer a page's reads."""


async def follow_log(web: Web, task_id: int, offset: int) -> AsyncIterator[str]:
    """One browser's live log of a running task: the `logs` follow stream, read in a thread
    of its own (a browser that leaves must not hold one of the shared executor's threads
    until the task ends: that starved every other live log). The thread looks at `stop`
    every FOLLOW_IDLE_SECONDS at least and then ends, closing its daemon connection.

    Each frame's event id is the offset after it: a browser that reconnects sends it back
    (`Last-Event-ID`) and the log resumes there instead of repeating from the start."""
    import asyncio

    if not web.live_logs.acquire(blocking=False):
        yield frame("log_paused", {"reason": f"{MAX_LIVE_LOGS} live logs are open; reload later"})
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    stop = threading.Event()

    def put(item: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the web is stopping
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def read() -> None:
        client = Client(web.link.socket, timeout=None, origin="syncd web")
        args = {"id": task_id, "follow": True, "offset": offset}
        try:
            for item in client.open_stream("logs", args, idle=FOLLOW_IDLE_SECONDS):
                if stop.is_set():
                    break
                if item is not None and "text" in item:
                    put(frame("log", item, event_id=str(item.get("offset", ""))))
                elif item is not None:
                    break
        except (DaemonUnreachable, DaemonError, OSError):
            pass
        finally:
            client.close()
            web.live_logs.release()
            put(None)

    try:
        threading.Thread(target=read, name=f"web-log-{task_id}", daemon=True).start()
    except RuntimeError:  # no thread to be had: the slot goes back, the log is not followed
        web.live_logs.release()
        raise
    try:
        while (item := await queue.get()) is not None:
            yield item
    finally:
        stop.set()


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY only on such sockets, and without it every
    # answer on a kept-alive connection waited 40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(settings: WebSettings, socket_path: Path, token: str | None) -> int:
    """Serve until SIGTERM/SIGINT; prints the URL it listens on (port 0 = any free port)."""
    import uvicorn

    sock = bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"syncd web: http://{host}:{port}{settings.base_path} (daemon socket {socket_path})")
    sys.stdout.flush()
    app = create_app(settings, socket_path, token)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=3,
        lifespan="on",
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def run_web(config_path: str | None, listen: str | None, socket_path: str | None) -> int:
    """`syncd web`: settings from the config's [web] (if the file exists), --listen and
    --socket override; exit 78 on a config or token problem, as the daemon does."""
    import os

    from syncd.config.load import load_config
    from syncd.config.model import ConfigError
    from syncd.config.web import default_hosts, parse_listen
    from syncd.core.paths import resolve_config_path
    from syncd.ctl.client import locate_socket
    from syncd.web.security import read_token

    path = resolve_config_path(config_path, os.environ)
    settings = WebSettings()
    sock: Path | None = Path(socket_path) if socket_path else None
    if config_path or path.exists():
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            for problem in exc.problems:
                print(str(problem), file=sys.stderr)
            print(f"syncd web: config error in {path}", file=sys.stderr)
            return 78
        settings = cfg.web
        sock = sock or cfg.daemon.socket
    if sock is None:
        sock = locate_socket(None, None, os.environ)[0]
    if listen:
        parsed = parse_listen(listen, allow_any_port=True)
        if parsed is None:
            print(f"syncd web: --listen: expected HOST:PORT, got {listen!r}", file=sys.stderr)
            return 2
        hosts = tuple(dict.fromkeys([*settings.allowed_hosts, *default_hosts(parsed[0])]))
        settings = replace(settings, host=parsed[0], port=parsed[1], allowed_hosts=hosts)
    token = None
    if settings.actions:
        assert settings.token_file is not None  # the loader requires it with actions
        try:
            token = read_token(settings.token_file)
        except (OSError, ValueError) as exc:
            print(f"syncd web: web.token_file: {exc}", file=sys.stderr)
            return 78
    try:
        return serve(settings, sock, token)
    except OSError as exc:
        print(
            f"syncd web: cannot listen on {settings.listen}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
