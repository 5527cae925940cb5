"""TaskLog: head + tail capping, progress capture, reading while running, full disk."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.tasklog import writer as tasklog
from syncd.tasklog.reader import read_log, read_slice
from syncd.tasklog.writer import MARKER, PROGRESS_MAX, TaskLog, remove_log, tail_dir


def marker(n: int) -> bytes:
    return MARKER % n


def expected_final(data: bytes, max_bytes: int) -> bytes:
    head = max_bytes // 2
    tail = max_bytes - head
    if len(data) <= max_bytes:
        return data
    return data[:head] + marker(len(data) - head - tail) + data[-tail:]


def write_chunks(log: TaskLog, data: bytes, sizes: list[int]) -> None:
    pos = 0
    for size in sizes:
        log.write(data[pos : pos + size])
        pos += size
    log.write(data[pos:])


def disk_usage(path: Path) -> int:
    total = path.stat().st_size if path.exists() else 0
    tail = tail_dir(path)
    if tail.exists():
        total += sum(p.stat().st_size for p in tail.iterdir())
    return total


def test_reads_never_cut_a_character_in_two(tmp_path: Path) -> None:
    """Each read was decoded on its own: a character split by the 1 MiB limit (or by what
    a running task had written so far) became two replacement characters, while the
    offset moved past it, so the log as read was not the log as written."""
    path = tmp_path / "1.log"
    text = "a€" * 1000  # 4 bytes per pair: any odd limit lands inside a €
    log = TaskLog(path, 1 << 20)
    log.write(text.encode())
    for limit in (1, 2, 3, 5, 7, 1000):
        got, at = [], 0
        while at < len(text.encode()):
            part = read_slice(path, at, limit)
            assert part.next_offset > at or limit < 3, (limit, at)
            if part.next_offset == at:  # shorter than one character: ask for more
                part = read_slice(path, at, 3)
            got.append(part.text)
            at = part.next_offset
        assert "".join(got) == text, limit
    log.write("é".encode()[:1])  # a running task has written half a character so far
    running = read_slice(path, len(text.encode()) - 3, final=False)
    assert (running.text, running.next_offset) == ("€", len(text.encode()))  # the half waits
    ended = read_slice(path, len(text.encode()), final=True)  # it never came: say so
    assert (ended.text, ended.next_offset) == ("\ufffd", len(text.encode()) + 1)
    log.close()


def test_small_log_is_written_as_is(tmp_path: Path) -> None:
    path = tmp_path / "1.log"
    log = TaskLog(path, 1000)
    log.write(b"hello\n")
    log.write(b"world\n")
    assert read_log(path) == ("hello\nworld\n", 12, False)  # readable while open
    log.close()
    assert path.read_bytes() == b"hello\nworld\n"
    assert log.bytes_written == 12
    assert read_log(path) == ("hello\nworld\n", 12, False)
    assert read_log(path, 6) == ("world\n", 12, False)
    assert read_log(path, 0, 3) == ("hel", 3, False)
    assert read_log(path, 50) == ("", 12, False)
    assert not tail_dir(path).exists()


def test_log_dir_removed_under_a_running_daemon_is_made_again(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "7.log"  # "logs" does not exist (an operator deleted it)
    log = TaskLog(path, 1000)
    log.write(b"out\n")
    log.close()
    assert path.read_bytes() == b"out\n"


def test_a_stale_tail_under_the_same_name_is_cleared(tmp_path: Path) -> None:
    path = tmp_path / "3.log"
    tail_dir(path).mkdir()
    (tail_dir(path) / "00000000000000000000").write_bytes(b"old")
    log = TaskLog(path, 1000)
    assert not tail_dir(path).exists()
    log.close()


def test_capped_log_keeps_head_and_tail(tmp_path: Path) -> None:
    path = tmp_path / "2.log"
    data = bytes(random.Random(1).randrange(256) for _ in range(100_000))
    log = TaskLog(path, 10_000)
    write_chunks(log, data, [1, 7, 4999, 3, 20_000, 12_345, 1])
    log.close()
    assert path.read_bytes() == expected_final(data, 10_000)
    assert log.bytes_written == len(data)
    assert not tail_dir(path).exists()
    assert not path.with_name(path.name + ".tmp").exists()


def test_reading_while_capped_and_running(tmp_path: Path) -> None:
    path = tmp_path / "3.log"
    log = TaskLog(path, 64 * 1024)
    data = b"".join(b"line %06d\n" % i for i in range(50_000))
    log.write(data)
    text, end, capped = read_log(path, 0, 1 << 30)
    assert capped
    assert end == len(data)
    assert text.startswith("line 000000\n")
    assert text.endswith("line 049999\n")
    assert "bytes omitted]" in text
    assert disk_usage(path) <= 64 * 1024 + log.segment_size
    log.close()
    assert disk_usage(path) == 64 * 1024 + len(marker(len(data) - 64 * 1024))


def test_disk_use_stays_bounded_while_writing(tmp_path: Path) -> None:
    path = tmp_path / "4.log"
    log = TaskLog(path, 100_000)
    chunk = b"z" * 7919
    for _ in range(500):
        log.write(chunk)
        assert disk_usage(path) <= 100_000 + log.segment_size
    log.close()
    assert path.stat().st_size <= 100_000 + 40


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=5000),
    max_bytes=st.integers(min_value=2, max_value=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=8),
)
def test_final_file_for_any_chunking(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, max_bytes: int, cuts: list[int]
) -> None:
    path = tmp_path_factory.mktemp("h") / "x.log"
    log = TaskLog(path, max_bytes)
    sizes = [b - a for a, b in zip([0, *sorted(cuts)], sorted(cuts), strict=False)]
    write_chunks(log, data, sizes)
    log.close()
    if not data:  # no output, no file
        assert not path.exists()
        return
    assert path.read_bytes() == expected_final(data, max_bytes)
    text, end, capped = read_log(path, 0, 1 << 30)
    assert end == len(data)
    assert capped == (len(data) > max_bytes)
    assert text == expected_final(data, max_bytes).decode("utf-8", "replace")


def test_follower_keeps_its_place_across_cap_and_close(tmp_path: Path) -> None:
    """A reader that polls between writes sees every byte exactly once, no marker."""
    path = tmp_path / "5.log"
    log = TaskLog(path, 20_000)
    rng = random.Random(7)
    data = b"".join(b"%d:%s\n" % (i, b"x" * rng.randrange(300)) for i in range(3000))
    seen: list[str] = []
    offset = 0
    pos = 0
    while pos < len(data):
        size = rng.randrange(1, 3000)
        log.write(data[pos : pos + size])
        pos += size
        text, offset, _ = read_log(path, offset)
        seen.append(text)
    log.close()
    text, offset, capped = read_log(path, offset)
    assert (text, offset, capped) == ("", len(data), True)
    assert "".join(seen) == data.decode()


def test_slow_follower_sees_a_marker_for_what_it_missed(tmp_path: Path) -> None:
    path = tmp_path / "6.log"
    log = TaskLog(path, 1000)
    log.write(b"a" * 600)
    first, offset, _ = read_log(path)
    assert (first, offset) == ("a" * 600, 600)
    log.write(b"b" * 5000)
    text, offset, capped = read_log(path, offset)
    assert capped
    assert offset == 5600
    assert text.startswith("\n[syncd: ")
    assert text.endswith("b" * 500)
    log.close()
    text, offset2, _ = read_log(path, 700)
    assert text == marker(5100 - 700).decode() + "b" * 500
    assert offset2 == 5600


def test_read_log_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_log(tmp_path / "nope.log")


def test_binary_output_is_stored_raw_and_replaced_on_read(tmp_path: Path) -> None:
    path = tmp_path / "7.log"
    log = TaskLog(path, 1000)
    log.write(b"ok \xff\xfe\x80 end\n")
    log.close()
    assert path.read_bytes() == b"ok \xff\xfe\x80 end\n"
    text, _, _ = read_log(path)
    assert text == "ok \ufffd\ufffd\ufffd end\n"


# -- progress ---------------------------------------------------------------------------------


def reference_progress(data: bytes) -> str | None:
    found = None
    for line in data.split(b"\n"):
        if line.startswith(b"::progress "):
            raw = line[len(b"::progress ") :][:PROGRESS_MAX]
            text = raw.decode("utf-8", "replace").strip()
            if text:
                found = text
    return found


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.sampled_from([b"::progress 1/3", b"::progress  done ", b"::prog", b"x::progress 9", b""])
        | st.binary(max_size=20),
        max_size=12,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_progress_is_the_last_progress_line_for_any_chunking(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], cuts: list[int]
) -> None:
    data = b"\n".join(lines)
    log = TaskLog(tmp_path_factory.mktemp("p") / "p.log", 1 << 20)
    sizes = [b - a for a, b in zip([0, *sorted(cuts)], sorted(cuts), strict=False)]
    write_chunks(log, data, sizes)
    log.close()
    assert log.progress == reference_progress(data)


def test_progress_bytewise_and_last_line_without_newline(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "b.log", 1 << 20)
    for byte in b"start\n::progress 10%\nnoise ::progress 99%\n::progress 20%":
        log.write(bytes([byte]))
    assert log.progress == "10%"
    log.close()
    assert log.progress == "20%"


def test_megabyte_progress_line_is_truncated(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "m.log", 10_000)
    log.write(b"::progress " + b"p" * 300_000)
    for _ in range(3):
        log.write(b"q" * 300_000)
    log.write(b"\nafter\n")
    assert log.progress == "p" * PROGRESS_MAX
    assert len(log._capture or b"") == 0  # nothing buffered once the line ended
    log.close()


def test_truncated_progress_never_ends_in_a_broken_character(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "u.log", 10_000)
    log.write(("::progress " + "€" * 3000 + "\n").encode())
    assert log.progress == "€" * (PROGRESS_MAX // 3)
    log.write(b"::progress " + b"\xff" * 5000 + b"\n")
    assert log.progress is not None
    assert len(log.progress.encode()) <= PROGRESS_MAX
    log.close()


# -- full disk --------------------------------------------------------------------------------


class FullDisk:
    """os.write that fails with ENOSPC for files under one directory while `full` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.full = False
        self.root = str(root)
        self.real = os.write
        monkeypatch.setattr(os, "write", self.write)
        monkeypatch.setattr(tasklog, "_DROP_RETRY_SECONDS", 0.0)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if self.full and target.startswith(self.root):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real(fd, data)


def log_with_a_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, kept: int, lost: int
) -> tuple[TaskLog, Path]:
    """A log (cap 10,000) that got `kept` bytes of "a", then `lost` bytes of "b" on a full
    disk; the disk has room again."""
    disk = FullDisk(monkeypatch, tmp_path)
    path = tmp_path / name
    log = TaskLog(path, 10_000)
    log.write(b"a" * kept)
    disk.full = True
    log.write(b"b" * lost)  # must not raise
    disk.full = False
    assert log.dropped
    return log, path


def test_full_disk_drops_output_with_a_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, path = log_with_a_drop(tmp_path, monkeypatch, "f.log", 100, 1000)
    log.write(b"c" * 100)
    text, end, _ = read_log(path)
    assert text == "a" * 100 + marker(1000).decode() + "c" * 100
    assert end == 1200
    log.close()
    assert path.read_bytes() == b"a" * 100 + marker(1000) + b"c" * 100
    assert log.bytes_written == 1200
    # Assembled, it is still read by output offset (its map says where the gap is): it was
    # read as an uncapped file, so offsets were file offsets and its end was wrong.
    assert read_log(path) == ("a" * 100 + marker(1000).decode() + "c" * 100, 1200, True)
    assert read_log(path, 1150) == ("c" * 50, 1200, True)


def test_full_disk_in_the_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log, path = log_with_a_drop(tmp_path, monkeypatch, "g.log", 20_000, 500)
    log.write(b"c" * 300)
    log.close()
    final = path.read_bytes()
    assert final == b"a" * 5000 + marker(10_300) + b"a" * 4700 + marker(500) + b"c" * 300
    assert not tail_dir(path).exists()
    # A follower at output offset 20_600 gets the last 200 bytes: it got nothing (the file
    # was read as uncapped, and it is shorter than that) and ended without the end.
    assert read_log(path, 20_600) == ("c" * 200, 20_800, True)
    text, end, capped = read_log(path)
    assert (text, end, capped) == (final.decode(), 20_800, True)


def test_output_dropped_at_the_end_reads_as_a_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, path = log_with_a_drop(tmp_path, monkeypatch, "e.log", 100, 50)
    log.close()
    assert read_log(path) == ("a" * 100 + marker(50).decode(), 150, True)
    assert read_log(path, 150) == ("", 150, True)
    assert remove_log(path) > 0 and list(tmp_path.iterdir()) == []


def test_failed_assembly_keeps_the_running_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*_args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    path = tmp_path / "h.log"
    log = TaskLog(path, 10_000)
    log.write(b"a" * 20_000 + b"END")
    monkeypatch.setattr(TaskLog, "_copy_tail", no_space)
    log.close()  # never raises
    assert log.dropped
    assert not path.with_name(path.name + ".tmp").exists()
    text, end, capped = read_log(path, 0, 1 << 20)
    assert capped
    assert text.startswith("a" * 5000 + "\n[syncd: ")
    assert text.endswith("aaaEND")
    assert end == 20_003


def test_remove_log_takes_crash_leftovers_too(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    log = TaskLog(path, 10_000)
    log.write(b"x" * 30_000)  # head + segments on disk, as after a daemon crash
    path.with_name("r.log.tmp").write_bytes(b"t" * 10)
    expected = disk_usage(path) + 10
    assert remove_log(path) == expected
    assert list(tmp_path.iterdir()) == []
    assert remove_log(path) == 0


@pytest.mark.parametrize("step", [1, 3, 7, 4096])
def test_retry_after_and_throttle_lines_in_any_chunking(tmp_path: Path, step: int) -> None:
    out = (
        b"working\n::progress 10%\n::throttle 30 HTTP 429 from /deals\nmore\n"
        b"::retry-after soon\n::retry-after -5 negative\n::throttle nan\n"  # ignored
        b"::progressive not a directive\n::retry-after 120   HTTP 503 maintenance  \n"
        b"::throttle 45\ntail"
    )
    log = TaskLog(tmp_path / "1.log", 1 << 20)
    for i in range(0, len(out), step):
        log.write(out[i : i + step])
    log.close()
    assert log.progress == "10%"
    assert log.retry_after == (120.0, "HTTP 503 maintenance")
    assert (log.throttle, log.throttles) == ((45.0, None), 2)
    assert (tmp_path / "1.log").read_bytes() == out  # the lines stay in the log too


def test_no_output_no_file_and_a_stale_file_is_gone(tmp_path: Path) -> None:
    """A task that prints nothing costs no file; one left under its name (a state dir
    reset while logs/ stayed) is removed, so it is never shown as this task's output."""
    path = tmp_path / "logs" / "7.log"
    path.parent.mkdir()
    path.write_bytes(b"an older task's output\n")
    log = TaskLog(path, 1000)
    assert not path.exists()
    log.write(b"")
    log.close()
    assert not path.exists()
    log = TaskLog(path, 1000)
    log.write(b"now\n")
    assert path.read_bytes() == b"now\n"  # created at the first output, readable at once
    log.close()
    assert path.read_bytes() == b"now\n"
