"""Shell completion for real: the bash script from `syncctl completion bash` is sourced in a
real bash, which runs syncctl the way click's protocol does (`_SYNCCTL_COMPLETE=bash_complete`
with COMP_WORDS/COMP_CWORD). Task ids, sources, sync types and schedule names come from the
daemon; with no daemon completion is silent. Every command's --help carries an example."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from syncd.ctl.main import main as syncctl
from tests.helpers.daemon import DaemonProc, syncctl_script


def complete(folder: Path, words: list[str], env: dict[str, str] | None = None) -> list[str]:
    """COMPREPLY for the command line `words` (the last word is the one being completed)."""
    script = syncctl_script(folder)
    source = subprocess.run(
        [str(script), "completion", "bash"], capture_output=True, text=True, check=True
    ).stdout
    (folder / "complete.bash").write_text(source)
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    program = (
        f"source {folder / 'complete.bash'}\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
        # As bash calls it on <TAB>: the command, the current word, the previous word.
        '_syncctl_completion syncctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"\n'
        "complete -p syncctl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    full_env = {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}", **(env or {})}
    full_env.pop("SYNCD_CONFIG", None)
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # completion never prints errors into the prompt
    lines = result.stdout.splitlines()
    assert lines[0] == "complete -o nosort -F _syncctl_completion syncctl"  # registered
    return [line for line in lines[1:] if line]


def test_command_names_complete_in_a_real_bash(workdir: Path) -> None:
    env = {"SYNCD_SOCKET": str(workdir / "none.sock")}
    assert complete(workdir, ["syncctl", "can"], env) == ["cancel-task"]
    assert complete(workdir, ["syncctl", "schedule", "re"], env) == ["resume"]
    assert "--summary" in complete(workdir, ["syncctl", "history", "--su"], env)


def test_ids_sources_types_and_schedules_come_from_the_daemon(
    make_daemon: Callable[..., DaemonProc],
    workdir: Path,
) -> None:
    d = make_daemon(
        {
            "alpha": {"routes": {"a1": "a1", "a2": "a2"}},
            "beta": {"routes": {"b1": "b1"}},
        },
        schedules=[{"name": "nightly", "cron": "0 2 * * *", "source": "beta", "sync_type": "b1"}],
    )
    d.call("pause")
    ids = [d.call("submit", source="alpha", sync_type=t)["task"]["id"] for t in ("a1", "a2", "a1")]
    env = {"SYNCD_SOCKET": str(d.socket)}
    assert sorted(complete(workdir, ["syncctl", "cancel-task", ""], env)) == sorted(
        str(i) for i in set(ids)
    )
    assert complete(workdir, ["syncctl", "explain", str(ids[1])], env) == [str(ids[1])]
    assert complete(workdir, ["syncctl", "submit", ""], env) == ["alpha", "beta"]
    assert complete(workdir, ["syncctl", "submit", "alpha", ""], env) == ["a1", "a2"]
    assert complete(workdir, ["syncctl", "resolve", "beta", "b"], env) == ["b1"]
    assert complete(workdir, ["syncctl", "history", "--source", "a"], env) == ["alpha"]
    assert complete(workdir, ["syncctl", "schedule", "run", ""], env) == ["nightly"]
    assert complete(workdir, ["syncctl", "source", "pause", "b"], env) == ["beta"]
    assert complete(workdir, ["syncctl", "source", "reset", ""], env) == ["alpha", "beta"]
    # --socket on the command line is honoured too.
    words = ["syncctl", "--socket", str(d.socket), "routes", "b"]
    assert complete(workdir, words, {"SYNCD_SOCKET": "/nowhere.sock"}) == ["beta"]


def test_completion_is_silent_without_a_daemon(workdir: Path) -> None:
    env = {"SYNCD_SOCKET": str(workdir / "none.sock")}
    assert complete(workdir, ["syncctl", "cancel-task", ""], env) == []
    assert complete(workdir, ["syncctl", "submit", ""], env) == []


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_scripts_for_each_shell(shell: str) -> None:
    result = CliRunner().invoke(syncctl, ["completion", shell])
    assert result.exit_code == 0
    assert f"_SYNCCTL_COMPLETE={shell}_complete" in result.output
    assert "syncctl" in result.output


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        out.append(path)
        if isinstance(cmd, click.Group):
            out += command_paths(cmd, path)
    return out


def test_every_command_help_has_an_example() -> None:
    paths = command_paths(syncctl)
    assert ("top",) in paths and ("schedule", "run") in paths
    missing = []
    for path in paths:
        result = CliRunner().invoke(syncctl, [*path, "--help"])
        assert result.exit_code == 0, path
        if f"Example: syncctl {path[0]}" not in result.output:
            missing.append(" ".join(path))
    assert missing == []
