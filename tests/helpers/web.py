"""A real `syncd web` against a real daemon: starting both, a module's shared stack, the token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.daemon import REPO, DaemonProc, daemon_settings, render_config, wait_for

TOKEN = "test-token-0123456789"
SOURCES = {
    "alpha": {"routes": {"a1": "a1", "a2": "a2"}},
    "beta": {"max_concurrent": 1, "routes": {"b1": "b1", "b2": "b2"}},
    "gamma": {"routes": {"g1": {"command": "g1", "freshness_minutes": 60}}},  # /freshness
}
SCHEDULES = [{"name": "alpha-hourly", "cron": "0 * * * *", "source": "alpha", "sync_type": "a1"}]


@dataclass
class WebProc:
    proc: subprocess.Popen[str]
    url: str  # http://127.0.0.1:PORT/ (base path included)
    host: str  # 127.0.0.1:PORT
    log: Path

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url.rstrip("/") + path, timeout=20, **kw)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url.rstrip("/"), timeout=20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_web(config: Path, *extra: str) -> WebProc:
    """`syncd web` on 127.0.0.1:0; its first stdout line names the port it got."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "syncd", "web", "--config", str(config)]
    log = config.with_name("web.log")
    with open(log, "a") as out:
        proc = subprocess.Popen(
            [*argv, "--listen", "127.0.0.1:0", *extra],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )

    def url() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"syncd web exited {proc.returncode}: {log.read_text()}")
        for line in log.read_text().splitlines():
            if line.startswith("syncd web: http://"):
                return line.split()[2]
        return None

    found: str = wait_for(url, 20, "syncd web to print its URL")
    web = WebProc(proc, found, found.split("/")[2], log)
    wait_for(lambda: _answers(web), 20, "syncd web to answer")
    return web


def _answers(web: WebProc) -> bool:
    try:
        return web.get("/healthz").status_code in (200, 503)
    except httpx.HTTPError:
        return False


@dataclass
class Stack:
    workdir: Path
    daemon: DaemonProc
    web: WebProc


def make_stack(
    workdir: Path, web_table: dict[str, Any] | None = None, daemon: dict[str, Any] | None = None
) -> Stack:
    settings = {**daemon_settings(workdir), **(daemon or {})}
    text = render_config(settings, SOURCES, schedules=SCHEDULES)
    (workdir / "token").write_text(TOKEN + "\n")
    table = {"actions": True, "token_file": "token", **(web_table or {})}
    text += "[web]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in table.items())
    d = DaemonProc(workdir, text)
    d.start()
    return Stack(workdir, d, start_web(d.config))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return f'"{value}"'
