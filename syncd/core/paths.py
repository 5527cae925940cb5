"""Every default path and file name of syncd, defined once: the daemon, syncctl, the web and
maintenance all derive theirs from here, so they can never disagree about where things are."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

DEFAULT_CONFIG_PATH = Path("/etc/syncd/syncd.toml")
# The systemd unit's socket (RuntimeDirectory=syncd): an operator's login shell does not
# have the unit's $RUNTIME_DIRECTORY, so syncctl also looks here.
SYSTEM_SOCKET = Path("/run/syncd/syncd.sock")
SOCKET_NAME = "syncd.sock"
DB_NAME = "syncd.db"
LOCK_NAME = "syncd.lock"
LOG_DIR_NAME = "logs"

# A task's log and what may be beside it (a temporary file, tail segments, the map of a log
# whose output was dropped in places).
_LOG_NAME = re.compile(r"([0-9]+)\.log(?:\.tmp|\.tail|\.tail\.old|\.map|\.map\.tmp)?")


def first_dir(value: str) -> str:
    """systemd passes several directories colon-separated; the first is ours."""
    return value.split(":")[0]


def resolve_config_path(cli_path: str | None, env: Mapping[str, str]) -> Path:
    """--config, else $SYNCD_CONFIG, else /etc/syncd/syncd.toml."""
    if cli_path:
        return Path(cli_path)
    if env.get("SYNCD_CONFIG"):
        return Path(env["SYNCD_CONFIG"])
    return DEFAULT_CONFIG_PATH


def default_state_dir(env: Mapping[str, str]) -> Path:
    """$STATE_DIRECTORY (systemd), else $XDG_STATE_HOME/syncd, else ~/.local/state/syncd."""
    if first_dir(env.get("STATE_DIRECTORY", "")):
        return Path(first_dir(env["STATE_DIRECTORY"]))
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "syncd"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".local" / "state" / "syncd"


def runtime_sockets(env: Mapping[str, str]) -> list[tuple[Path, str]]:
    """The sockets the environment points at, best first, each with where it came from."""
    found = []
    if first_dir(env.get("RUNTIME_DIRECTORY", "")):
        found.append(
            (Path(first_dir(env["RUNTIME_DIRECTORY"])) / SOCKET_NAME, "$RUNTIME_DIRECTORY")
        )
    if env.get("XDG_RUNTIME_DIR"):
        found.append((Path(env["XDG_RUNTIME_DIR"]) / SOCKET_NAME, "$XDG_RUNTIME_DIR"))
    return found


def default_socket(env: Mapping[str, str], state_dir: Path) -> Path:
    """$RUNTIME_DIRECTORY/syncd.sock, else $XDG_RUNTIME_DIR/syncd.sock, else in the state dir."""
    found = runtime_sockets(env)
    return found[0][0] if found else state_dir / SOCKET_NAME


def db_path(state_dir: Path) -> Path:
    return state_dir / DB_NAME


def lock_path(state_dir: Path) -> Path:
    return state_dir / LOCK_NAME


def log_dir(state_dir: Path) -> Path:
    return state_dir / LOG_DIR_NAME


def task_log(logs: Path, task_id: int) -> Path:
    """The log file of one task inside the log directory."""
    return logs / f"{int(task_id)}.log"


def log_task_id(name: str) -> int | None:
    """The task id a file name in the log directory belongs to; None for other files."""
    match = _LOG_NAME.fullmatch(name)
    return int(match.group(1)) if match else None
