"""A progress line reaches the store when printed: one queued write per task at a time,
recording the newest line when it runs (issue 11.11)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from syncd.pool.progress import ProgressRecorder
from syncd.tasklog.writer import TaskLog


class HeldSink:
    """A writer that queues posts until the test runs them."""

    def __init__(self) -> None:
        self.posted: list[tuple[int, Callable[[], str | None]]] = []
        self.fail = False

    def post_progress(self, task_id: int, latest: Callable[[], str | None]) -> None:
        if self.fail:
            raise RuntimeError("store closed")
        self.posted.append((task_id, latest))


def test_a_burst_of_lines_is_one_write_of_the_newest(tmp_path: Path) -> None:
    sink = HeldSink()
    log = TaskLog(tmp_path / "7.log", 1 << 20)
    log.on_progress = ProgressRecorder(sink, 7, lambda: log.progress)
    log.write(b"::progress 1/3\n::progress 2/3\n")
    log.write(b"::progress 3/3\n")
    assert len(sink.posted) == 1 and sink.posted[0][0] == 7
    assert sink.posted[0][1]() == "3/3"  # the write runs: it takes the newest line
    log.write(b"::progress done\n")  # after the write ran, a new line needs a new write
    assert len(sink.posted) == 2 and sink.posted[1][1]() == "done"
    log.close()


def test_a_failed_post_is_retried_by_the_next_line(tmp_path: Path) -> None:
    sink = HeldSink()
    log = TaskLog(tmp_path / "8.log", 1 << 20)
    log.on_progress = ProgressRecorder(sink, 8, lambda: log.progress)
    sink.fail = True
    log.write(b"::progress 1/3\n")
    sink.fail = False
    log.write(b"::progress 2/3\n")
    assert [latest() for _, latest in sink.posted] == ["2/3"]
    log.close()


def test_a_repeated_line_is_not_news_and_a_failing_listener_stops_nothing(
    tmp_path: Path,
) -> None:
    calls: list[str | None] = []
    log = TaskLog(tmp_path / "9.log", 1 << 20)

    def listener() -> None:
        calls.append(log.progress)
        raise RuntimeError("listener broke")

    log.on_progress = listener
    log.write(b"::progress 1/3\n::progress 1/3\nplain\n::progress 2/3\n")
    log.close()
    assert calls == ["1/3", "2/3"]
    assert log.progress == "2/3"
    assert (tmp_path / "9.log").read_bytes().endswith(b"plain\n::progress 2/3\n")
