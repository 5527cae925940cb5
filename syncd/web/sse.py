"""Live pages over Server-Sent Events, from one shared `watch` subscription.

One thread reads the daemon's event stream (only while some browser listens) and hands
each event to the event loop. An event marks the pages it concerns dirty; after a short
debounce each dirty page that has listeners is rebuilt once, in a worker thread, and the
same rendered fragments go to every listener of that page. So the daemon's load depends on
how often things change, never on how many browsers are open; a browser that does not read
is dropped rather than buffered without bound."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from syncd.ctl.client import DaemonError, DaemonUnreachable
from syncd.web.link import DaemonLink

log = logging.getLogger(__name__)

DEBOUNCE_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
RECONNECT_SECONDS = 1.0
QUEUE_SIZE = 64  # messages buffered per browser before it is dropped

Builder = Callable[[str], dict[str, str]]  # page key -> {element id: html}


def pages_for(event: dict[str, Any]) -> set[str]:
    """The page keys an event makes stale."""
    kind = event.get("event")
    keys = {"overview"}
    if kind == "task":
        task = event.get("task")
        task_id = task.get("id") if isinstance(task, dict) else task
        if task_id is not None:
            keys.add(f"task:{task_id}")
    elif kind in ("schedule", "config"):
        keys.add("schedules")
    return keys


def frame(event: str, data: Any, event_id: str | None = None) -> str:
    """One SSE message; with `event_id`, the browser sends it back when it reconnects."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class Hub:
    def __init__(self, link: DaemonLink, build: Builder):
        self.link = link
        self.build = build
        self.listeners: dict[str, set[asyncio.Queue[str | None]]] = {}
        self.dirty: set[str] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._flush_pending = False
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = False

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._thread = threading.Thread(target=self._watch, name="watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wanted.set()
        for queues in self.listeners.values():
            for q in queues:
                q.put_nowait(None)

    # -- browsers ---------------------------------------------------------------------------
    async def stream(self, key: str, extra: AsyncIterator[str] | None = None) -> AsyncIterator[str]:
        """The SSE body for one browser on page `key`."""
        q: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_SIZE)
        self.listeners.setdefault(key, set()).add(q)
        self._wanted.set()
        self._mark({key})  # anything that changed between the page's render and now
        pump = None
        if extra is not None:
            pump = asyncio.ensure_future(self._pump(extra, q))
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), KEEPALIVE_SECONDS)
                except asyncio.TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if item is None:
                    return
                yield item
        finally:
            if pump is not None:
                pump.cancel()
            queues = self.listeners.get(key)
            if queues is not None:
                queues.discard(q)
                if not queues:
                    del self.listeners[key]
            if not self.listeners:
                self._wanted.clear()

    async def _pump(self, source: AsyncIterator[str], q: asyncio.Queue[str | None]) -> None:
        async for item in source:
            self._offer(q, item)

    @staticmethod
    def _offer(q: asyncio.Queue[str | None], item: str) -> None:
        try:
            q.put_nowait(item)
        except asyncio.QueueFull:  # a browser that does not read: end its stream
            while not q.empty():
                q.get_nowait()
            q.put_nowait(None)

    # -- events -----------------------------------------------------------------------------
    def _mark(self, keys: set[str]) -> None:
        self.dirty |= keys & set(self.listeners)
        if self.dirty and not self._flush_pending and self.loop is not None:
            self._flush_pending = True
            self.loop.call_later(DEBOUNCE_SECONDS, lambda: asyncio.ensure_future(self._flush()))

    def _status(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            message = frame("daemon", {"connected": connected})
            for queues in self.listeners.values():
                for q in queues:
                    self._offer(q, message)
        if connected:
            self._mark(set(self.listeners))

    async def _flush(self) -> None:
        self._flush_pending = False
        keys, self.dirty = self.dirty, set()
        for key in keys:
            queues = self.listeners.get(key)
            if not queues:
                continue
            try:
                fragments = await run_in_threadpool(self.build, key)
            except (DaemonUnreachable, DaemonError) as exc:
                log.warning("live update of %s: %s", key, exc)
                continue
            except Exception:  # a bug in one page must not drop the other pages' updates
                log.exception("live update of %s failed", key)
                continue
            message = frame("fragments", fragments)
            for q in list(queues):
                self._offer(q, message)

    # -- the one watch subscription (its own thread) ----------------------------------------
    def _watch(self) -> None:
        while not self._stop.is_set():
            self._wanted.wait()
            if self._stop.is_set():
                return
            client = self.link.watch()
            try:
                events = client.open_stream("watch", {}, idle=1.0)
                self._to_loop(self._status, True)
                for event in events:
                    if self._stop.is_set() or not self._wanted.is_set():
                        break
                    if event is not None:
                        self._to_loop(self._mark, pages_for(event))
            except (DaemonUnreachable, DaemonError, OSError) as exc:
                log.info("watch: %s", exc)
            finally:
                client.close()
            if self._wanted.is_set() and not self._stop.is_set():
                self._to_loop(self._status, False)
                self._stop.wait(RECONNECT_SECONDS)

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)
