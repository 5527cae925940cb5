"""Composition root: lock → store → reconcile → socket → READY → dispatch, and an ordered
shutdown. Signal handlers only write to a pipe; the main thread acts on them."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from syncd.config.diff import applicable, diff_configs, restart_required
from syncd.config.load import load_config
from syncd.config.model import Config, ConfigError, Schedule
from syncd.config.routing import RouteTable
from syncd.control.auth import Authorizer
from syncd.control.ops.base import Context
from syncd.control.ops.table import registry
from syncd.control.server import Server, SocketInUse
from syncd.core import paths
from syncd.core.clock import Clock, SystemClock, iso
from syncd.core.errors import StoreUnusable, SyncdError
from syncd.core.events import EventBus
from syncd.core.models import ErrorCode, Status, trigger_schedule
from syncd.daemon.sdnotify import Notifier
from syncd.pool import reconcile
from syncd.pool.dispatcher import Dispatcher
from syncd.pool.monitor import Monitor
from syncd.schedule.maintenance import Maintenance
from syncd.schedule.scheduler import Scheduler
from syncd.service.metrics import (
    QUEUE_SAMPLE_SECONDS,
    SERIES_BUCKET_SECONDS,
    SERIES_SPAN_SECONDS,
    Metrics,
)
from syncd.service.tasks import TaskService
from syncd.store.facade import Store

log = logging.getLogger(__name__)

SWITCH_INTERVAL_SECONDS = 0.0005
EXIT_OK = 0
EXIT_REFUSED = 1  # another daemon holds the state dir or the socket
EXIT_STORAGE = 74  # EX_IOERR: a flush of the database failed; systemd restarts, SQLite recovers
_FATAL = 0xFF  # on the signal pipe: not a signal number, the daemon must stop


class DaemonRefused(Exception):
    """Another live daemon owns the state dir or the socket; it is left untouched."""


class SchedulePoolAdapter:
    """The scheduler's view of the pool: the same submit path a person uses."""

    def __init__(self, daemon: Daemon):
        self.d = daemon

    def submit_for_schedule(
        self, schedule: Schedule, last_fire: str | None = None
    ) -> tuple[int, str]:
        new = self.d.tasks.request(
            schedule.source,
            schedule.sync_type,
            dict(schedule.params),
            schedule.priority,
            trigger_schedule(schedule.name),
            "schedule",
        )
        state = None if last_fire is None else (schedule.name, {"last_fire": last_fire})
        task, coalesced = self.d.tasks.submit(new, schedule_state=state)
        if coalesced:
            return task.id, "coalesced"
        return task.id, "started" if task.status is Status.RUNNING else "queued"

    def active_task(self, schedule: Schedule) -> tuple[int, str] | None:
        new = self.d.tasks.request(
            schedule.source, schedule.sync_type, dict(schedule.params), None, "", None
        )
        task = self.d.store.active_for(new.source, new.route, new.params)
        return None if task is None else (task.id, task.status.value)

    def cancel_task(self, task_id: int) -> None:
        self.d.tasks.cancel_one(task_id)


def acquire_lock(state_dir: Path) -> int:
    """flock <state_dir>/syncd.lock; the fd stays open (and locked) for the daemon's life."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(paths.lock_path(state_dir), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        raise StoreUnusable(str(state_dir), f"state dir not usable: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise
        other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DaemonRefused(
            f"another syncd (pid {other}) already runs on state dir {state_dir}; "
            "it was left untouched"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class Daemon:
    def __init__(self, config: Config, clock: Clock | None = None):
        self.config = config
        self.clock = clock or SystemClock()
        self.pid = os.getpid()
        self.started_at: datetime = self.clock.now()
        self.started_mono = self.clock.monotonic()
        self.events = EventBus()
        self.metrics = Metrics(self.clock)
        self.notifier = Notifier.from_environ(os.environ)
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self.wake_main: Callable[[], None] = lambda: None  # run_daemon's: stop now
        self.lock_fd = -1
        self._next_sched = 0.0

    # -- start ------------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        for warning in cfg.warnings:
            log.warning("config %s", warning)
        self.lock_fd = acquire_lock(cfg.daemon.state_dir)
        self.store = Store.open(paths.db_path(cfg.daemon.state_dir), clock=self.clock)
        self.store.on_durability_lost(self._durability_lost)
        self.dispatcher = Dispatcher(
            store=self.store,
            routes=RouteTable.from_config(cfg),
            settings=cfg.daemon,
            clock=self.clock,
            events=self.events,
            on_task=self.metrics.observe_task,
            on_bulk_end=self.metrics.observe_bulk_end,
        )
        self.tasks = TaskService(self.store, self.dispatcher, self.clock)
        self.monitor = Monitor(self.dispatcher, self.clock)
        self.reconcile_lost()
        self.seed_metrics()
        self.scheduler = Scheduler(
            cfg.schedules,
            self.store,
            SchedulePoolAdapter(self),
            self.clock,
            on_fire=self.metrics.observe_fire,
        )
        self.scheduler.reconcile()
        self.maintenance = Maintenance(
            self.store,
            self.clock,
            prune_at=cfg.daemon.prune_at,
            history_days=cfg.daemon.history_days,
            log_dir=self.dispatcher.log_dir,
        )
        self.server = Server(
            cfg.daemon.socket,
            cfg.daemon.socket_mode,
            Context(self),
            Authorizer(cfg.daemon.control_group),
            ops=registry(),
        )
        try:
            self.server.bind()
        except SocketInUse as exc:
            raise DaemonRefused(str(exc)) from None
        self._server_thread = threading.Thread(
            target=self.server.serve_forever, name="server", daemon=True
        )
        self._server_thread.start()
        log.info(
            "syncd ready: pid %d, %d sources, %d schedules, max_workers %d, socket %s",
            self.pid,
            len(cfg.sources),
            len(cfg.schedules),
            self.dispatcher.max_workers,
            cfg.daemon.socket,
        )
        self.notifier.ready(self._status_line())
        self._loop_thread = threading.Thread(target=self._loop, name="dispatch", daemon=True)
        self._loop_thread.start()
        self.maintenance.start()

    # -- recovery ---------------------------------------------------------------------------
    def _policy(self) -> reconcile.Policy:
        d = self.config.daemon
        return reconcile.Policy(d.kill_grace_seconds, d.max_lost_requeues)

    def reconcile_lost(self) -> list[int]:
        """Tasks left `running` by a previous instance (see reconcile.py)."""
        lost = reconcile.reconcile_lost(self.store, self.clock, self._policy())
        self.metrics.observe_lost(len(lost))
        return lost

    def reconcile_orphans(self) -> list[int]:
        """Rows `running` in the database that this daemon is not running (fix-stuck); a task
        claimed right now is not taken for one."""
        # Rows first, then the pool: a task is admitted inside the transaction that claims
        # it, so every row read as running is already in `running` if it is ours.
        rows = self.store.tasks_with_status(Status.RUNNING)
        with self.dispatcher.cond:
            mine = set(self.dispatcher.running)
        orphans = [t for t in rows if t.id not in mine]
        done = reconcile.reconcile_orphans(self.store, self.clock, orphans, self._policy())
        self.metrics.observe_lost(len(done))
        return done

    def seed_metrics(self) -> None:
        """The throughput chart starts with the last 24 h of history, not empty."""
        since = iso(self.clock.now() - timedelta(seconds=SERIES_SPAN_SECONDS))
        try:
            self.metrics.seed_series(self.store.finished_counts(since, SERIES_BUCKET_SECONDS))
        except SyncdError as exc:  # a chart is not worth refusing to start over
            log.warning("metrics: history not read: %s", exc.message)

    # -- loop -------------------------------------------------------------------------------
    def _status_line(self) -> str:
        counts = self.store.counts()
        return (
            f"{len(self.dispatcher.running)}/{self.dispatcher.max_workers} running, "
            f"{counts.get('queued', 0)} queued"
        )

    def _loop(self) -> None:
        d = self.dispatcher
        mono = self.clock.monotonic
        next_watchdog = next_monitor = next_sample = mono()
        self._next_sched = mono()
        while not self._stop.is_set():
            # Schedules first: a fire queues its task and wakes the pool while this thread is
            # not waiting, so the tick right after must be the one that starts it. Each step
            # fails alone: a failing dispatch must not starve heartbeats or the watchdog.
            retry = self._step("schedules", self._tick_schedules)
            retry = self._step("dispatch", d.tick) or retry
            try:
                now = mono()
                if now >= next_monitor:
                    self.monitor.tick()
                    next_monitor = now + self.dispatcher.settings.heartbeat_seconds
                if now >= next_sample:  # the queue-depth chart: one O(1) read a minute
                    self.metrics.sample_queue(self.store.counts()["queued"])
                    next_sample = now + QUEUE_SAMPLE_SECONDS
                if now >= next_watchdog:
                    self.notifier.watchdog(self._status_line())
                    next_watchdog = now + self.notifier.watchdog_interval
                deadlines = [next_watchdog, self._next_sched, next_sample]
                if d.running:
                    deadlines.append(next_monitor)
                nb = d.next_deadline()
                if nb is not None:
                    deadlines.append(now + nb)
                timeout = max(0.0, min(deadlines) - mono())
                if retry is not None:
                    timeout = min(timeout, retry)
            except SyncdError as exc:  # e.g. the database is busy or full: try again shortly
                log.warning("dispatch loop: %s", exc.message)
                timeout = 1.0
            except Exception:
                log.exception("dispatch loop error")
                timeout = 1.0
            with d.cond:
                if self._stop.is_set():
                    break
                if not d.woken():  # a wake during this turn (one its tick missed) is not lost
                    d.cond.wait(timeout)

    def _tick_schedules(self) -> None:
        now = self.clock.monotonic()
        if now >= self._next_sched:
            self._next_sched = now + self.scheduler.tick()

    def _step(self, what: str, step: Callable[[], object]) -> float | None:
        """Run one step of the loop; on failure log it and ask to retry within a second."""
        try:
            step()
        except SyncdError as exc:  # e.g. the database is busy or full: try again shortly
            log.warning("%s: %s", what, exc.message)
            return 1.0
        except Exception:
            log.exception("%s failed", what)
            return 1.0
        return None

    def poke_scheduler(self) -> None:
        """Schedules changed at runtime (pause, resume, reload): evaluate them now."""
        self._next_sched = 0.0
        self.dispatcher.wake()

    # -- reload -----------------------------------------------------------------------------
    def reload(self, *, dry_run: bool = False, requested_by: str = "SIGHUP") -> dict[str, Any]:
        with self._reload_lock:
            path = self.config.path
            try:
                if path is None:
                    raise ConfigError("<none>", [])
                new = load_config(path)
            except ConfigError as exc:
                problems = [str(p) for p in exc.problems]
                for line in problems:
                    log.error("reload rejected: %s", line)
                raise SyncdError(
                    ErrorCode.CONFIG_INVALID,
                    f"config {path} has {len(problems)} problem(s); the running config is kept",
                    {"problems": problems},
                ) from None
            pending = restart_required(self.config, new)
            new = applicable(self.config, new)
            changes = diff_configs(self.config, new)
            routes = RouteTable.from_config(new)
            affected = self.store.queued_ids_of_routes_not_in(
                lambda source, route: routes.route(source, route) is not None
            )
            result = {
                "applied": not dry_run,
                "changes": changes,
                "affected_queued": affected,
                "restart_required": pending,
            }
            if dry_run:
                return result
            authorizer = Authorizer(new.daemon.control_group)  # built before anything changes
            self.config = new
            self.dispatcher.update_config(routes, new.daemon)
            self.scheduler.update(new.schedules)
            self.maintenance.update(
                prune_at=new.daemon.prune_at, history_days=new.daemon.history_days
            )
            # Checked on each request: the new group's rights hold from the next one.
            self.server.authorizer = authorizer
            self.poke_scheduler()
            log.info(
                "config reloaded by %s: %s",
                requested_by,
                ", ".join(f"{k} {len(v)}" for k, v in changes.items()),
            )
            for key in pending:
                log.warning("reload: %s changed in the config; it takes effect at restart", key)
            return result

    def _durability_lost(self, reason: str) -> None:
        """A flush of the WAL failed (the store tells once): nothing more can be acknowledged.
        Stop (the tasks are killed as at any stop; what cannot be recorded now, the restart
        reconciles); run_daemon then exits 74, as `store.durability_lost()` says."""
        log.critical("stopping: the database can no longer be written durably: %s", reason)
        self.wake_main()

    # -- stop -------------------------------------------------------------------------------
    def stop(self) -> None:
        log.info("stopping: killing %d running task(s)", len(self.dispatcher.running))
        self.notifier.stopping()
        self.server.stop_accepting()  # no new requests while the tasks are being recorded
        self.dispatcher.stop(self.config.daemon.kill_grace_seconds + 3)
        self._stop.set()
        self.dispatcher.wake()
        self.events.close_all()
        self.server.shutdown()
        self._loop_thread.join(2)
        self.maintenance.stop()
        self.store.close()
        os.close(self.lock_fd)
        log.info("stopped")


def _install_signal_pipe() -> tuple[int, int]:
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wfd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)  # the wakeup fd carries the signal number
    return rfd, wfd


def run_daemon(config: Config) -> int:
    """Run in the foreground until SIGTERM/SIGINT; SIGHUP reloads."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The format names no caller, thread or process: do not look them up for every line
    # (the logging HOWTO's "Optimization"; a few lines per task add up).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    rfd, wfd = _install_signal_pipe()
    # A thread that wakes (a child exited, a commit's fsync returned, a request arrived)
    # waits for the GIL up to this long while another computes: 5 ms by default, which
    # showed up as whole milliseconds in every dispatch. (Performance, README.)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    daemon = Daemon(config)
    daemon.wake_main = lambda: _wake(wfd)
    try:
        daemon.start()
    except DaemonRefused as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except SyncdError as exc:
        store = getattr(daemon, "store", None)
        if store is None or store.durability_lost() is None:
            raise
        print(f"syncd: database: {exc.message}", file=sys.stderr)
        _exit_unclosed()
    while True:
        select.select([rfd], [], [])
        try:
            data = os.read(rfd, 64)
        except BlockingIOError:
            continue
        sigs = set(data)
        if signal.SIGTERM in sigs or signal.SIGINT in sigs or _FATAL in sigs:
            break
        if signal.SIGHUP in sigs:
            try:
                daemon.reload(requested_by="SIGHUP")
            except SyncdError as exc:
                log.error("SIGHUP reload rejected: %s", exc.message)
            except Exception:  # a bug in applying it must not end the daemon and orphan tasks
                log.exception("SIGHUP reload failed; the daemon goes on")
    daemon.stop()
    if daemon.store.durability_lost() is not None:
        _exit_unclosed()
    return EXIT_OK


def _exit_unclosed() -> NoReturn:
    """Exit 74 without closing the database: a close (here or at interpreter exit) would
    checkpoint WAL pages whose flush failed into the database file (StoreBase.close)."""
    logging.shutdown()
    sys.stderr.flush()
    os._exit(EXIT_STORAGE)


def _wake(wfd: int) -> None:
    with contextlib.suppress(BlockingIOError):  # a full pipe already wakes the main thread
        os.write(wfd, bytes([_FATAL]))
