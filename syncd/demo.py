"""`syncd demo`: a real daemon on a throw-away state dir, a burst of submissions and the
monitor block until Ctrl-C. It drives the daemon only through the socket, as syncctl does,
and never leaves a daemon or a state dir behind."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any

from syncd.core.models import FINAL_NAMES
from syncd.ctl import render
from syncd.ctl.client import Client, DaemonError, DaemonUnreachable

log = logging.getLogger(__name__)

START_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0  # the daemon's kill grace + its own shutdown margin
REFRESH = 2.0
PRIORITIES = (5, 2, 7, 5, 0, 9, 3, 5, 1, 6, 4, 8)


class DemoFailed(Exception):
    pass


def run_demo(duration: float | None = None, speed: float = 1.0) -> int:
    """Run the demo; 0 when it ran (simulated failures included), 1 if it could not."""
    state = Path(tempfile.mkdtemp(prefix="syncd-demo-"))
    proc: subprocess.Popen[bytes] | None = None
    web: subprocess.Popen[bytes] | None = None
    try:
        with _signals_end_demo(), resources.as_file(_demo_config()) as config:
            proc = _start_daemon(state, config, speed)
            with Client(state / "syncd.sock", origin="the demo's state dir") as c:
                _wait_ready(c, proc, state)
                web = _start_web(state, config)
                _submit_burst(c)
                with contextlib.suppress(KeyboardInterrupt):
                    _dashboard(c, proc, duration)
                _summary(c)
        return 0
    except (DemoFailed, DaemonUnreachable, DaemonError) as exc:
        print(f"syncd demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if web is not None:
            _stop_daemon(web)
        if proc is not None:
            _stop_daemon(proc)
        shutil.rmtree(state, ignore_errors=True)


def _demo_config() -> Any:
    return resources.files("syncd") / "data" / "demo.toml"


@contextlib.contextmanager
def _signals_end_demo() -> Iterator[None]:
    """SIGTERM/SIGHUP end the demo like Ctrl-C, so the `finally` stopping the daemon runs."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    saved: dict[int, Any] = {}
    try:
        for sig in (signal.SIGTERM.value, signal.SIGHUP.value):
            saved[sig] = signal.signal(sig, interrupt)
    except ValueError:  # not the main thread: leave the handlers alone
        pass
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _demo_env(state: Path, speed: float = 1.0) -> dict[str, str]:
    env = dict(os.environ)
    env["STATE_DIRECTORY"] = str(state)
    env["RUNTIME_DIRECTORY"] = str(state)
    env["SYNCD_DEMO_SPEED"] = str(speed)
    # The demo catalog's routes run `python …`. We put this interpreter's directory first on
    # PATH on purpose, so that `python` is the interpreter running the demo (with syncd
    # importable): an explicit choice for the demo, not a fallback.
    env["PATH"] = os.pathsep.join(
        p for p in (os.path.dirname(sys.executable), env.get("PATH", "")) if p
    )
    # `python -m syncd` (the daemon) and the demo jobs import this very package, installed
    # or not: its folder goes first on PYTHONPATH.
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def _start_daemon(state: Path, config: Path, speed: float) -> subprocess.Popen[bytes]:
    env = _demo_env(state, speed)
    argv = [sys.executable, "-m", "syncd", "--config", str(config)]
    log.debug("starting the demo daemon: %s", argv)
    with open(state / "daemon.log", "wb") as err:
        # Its own session: Ctrl-C reaches only the demo, which then stops the daemon in order.
        return subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def _start_web(state: Path, config: Path) -> subprocess.Popen[bytes] | None:
    """`syncd web` on a free localhost port; its URL is printed. The demo goes on without
    it (and says why) if it cannot start."""
    argv = [sys.executable, "-m", "syncd", "web", "--config", str(config)]
    argv += ["--socket", str(state / "syncd.sock"), "--listen", "127.0.0.1:0"]
    out = state / "web.log"
    with open(out, "wb") as log_file:
        web = subprocess.Popen(
            argv,
            env=_demo_env(state),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and web.poll() is None:
        for line in out.read_text(errors="replace").splitlines():
            if line.startswith("syncd web: http://"):
                print(f"dashboard: {line.split()[2]}  (metrics at /metrics, health at /healthz)")
                return web
        with contextlib.suppress(subprocess.TimeoutExpired):
            web.wait(timeout=0.1)
    print(f"syncd demo: the dashboard did not start:\n{out.read_text(errors='replace')[-2000:]}")
    _stop_daemon(web)
    return None


def _daemon_stderr(state: Path, lines: int = 20) -> str:
    try:
        text = (state / "daemon.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _wait_ready(c: Client, proc: subprocess.Popen[bytes], state: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise DemoFailed(
                f"the daemon exited with code {proc.returncode} while starting:\n"
                + _daemon_stderr(state)
            )
        try:
            info = c.call("ping")
            print(f"syncd {info.get('version')} demo running (pid {info.get('pid')}, {state})")
            return
        except DaemonUnreachable:
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"the daemon did not answer within {START_TIMEOUT:g} s:\n"
                    + _daemon_stderr(state)
                ) from None
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.1)  # a pause that also notices the daemon dying


def _submit_burst(c: Client) -> None:
    """About a dozen submissions of mixed priorities over the demo's routes."""
    pairs = [
        (src["name"], route["sync_type"])
        for src in c.call("routes")["sources"]
        for route in src["routes"]
    ]
    if not pairs:
        raise DemoFailed("the demo config has no routes")
    for i, priority in enumerate(PRIORITIES):
        source, sync_type = pairs[i % len(pairs)]
        r = c.call("submit", source=source, sync_type=sync_type, priority=priority)
        verb = "coalesced into" if r.get("coalesced") else "queued"
        print(f"{verb} task {r['task']['id']} ({source}.{sync_type}, priority {priority})")


def _dashboard(c: Client, proc: subprocess.Popen[bytes], duration: float | None) -> None:
    """The monitor block every 2 s until Ctrl-C, `duration`, or (unattended) an idle pool."""
    until = None if duration is None else time.monotonic() + duration
    unattended = duration is None and not sys.stdin.isatty()
    clear = sys.stdout.isatty()
    if until is None and not unattended:
        print("Press Ctrl-C to stop.")
    while True:
        status = c.call("status", verbose=True)
        if clear:
            print("\033[H\033[J", end="")
        print(render.monitor_block(status, datetime.now().astimezone()) + "\n", flush=True)
        if unattended and not status.get("active") and not status.get("queued"):
            return
        wait = REFRESH if until is None else min(REFRESH, until - time.monotonic())
        if wait <= 0:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
        if proc.poll() is not None:
            raise DemoFailed(f"the daemon exited unexpectedly with code {proc.returncode}")


def _summary(c: Client) -> None:
    tasks = c.call("history", limit=1000).get("tasks", [])
    counts = Counter(t.get("status") for t in tasks)
    print("demo finished: " + ", ".join(f"{counts[s]} {s}" for s in FINAL_NAMES))


def _stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait for its orderly shutdown, SIGKILL only if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    while True:
        try:
            proc.wait(timeout=STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            log.warning("demo daemon %s ignored SIGTERM; killing it", proc.pid)
            proc.kill()
        except KeyboardInterrupt:
            # A second Ctrl-C while stopping: do not leave the daemon behind, kill it.
            proc.kill()
