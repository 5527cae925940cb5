"""A task's output log: capped to head + tail, readable while the task runs, bounded memory.

Layout while the task runs:

- `<path>` holds the head: the first `max_bytes // 2` bytes of output, appended as they come.
- Once the head is full, output goes to `<path>.tail/<start>`, segment files of about 1/8 of
  the tail budget, named by the stream offset of their first byte. The oldest segment is
  deleted as soon as the others still hold the whole tail budget, so the disk holds at most
  `max_bytes` plus one segment and memory holds one read buffer.

On close the final `<path>` is assembled (head + `\\n[syncd: N bytes omitted]\\n` + exactly the
tail budget) in a temporary file, moved over `<path>`, and the segments are removed. If output
was dropped (a full disk), the file has other gaps too, and `<path>.map` says where each
stored piece sits in the output (a reader cannot tell our markers from a job's own text).

Readers (logread.py) address the log by *output offset*: the position in the stream of
bytes the child wrote. For a log that was never capped that is the file offset; for a capped
one, omitted bytes keep their offsets and are rendered as the marker. So a follower keeps
its place across the cap and across the final assembly. Bytes are stored raw; invalid UTF-8 is
only replaced when read. Write failures (a full disk) never reach the caller: output is
dropped, and the gap is shown with the same marker.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

log = logging.getLogger(__name__)

MARKER = b"\n[syncd: %d bytes omitted]\n"
MARKER_RE = re.compile(rb"\n\[syncd: ([0-9]+) bytes omitted\]\n")
MARKER_FIXED = len(MARKER % 0) - 1
DIRECTIVE_PREFIX = b"::"  # `::progress TEXT`, `::retry-after SECONDS [reason]`, `::throttle ...`
PROGRESS_MAX = 4096
_CAPTURE_MAX = PROGRESS_MAX + 32  # the directive's word and its space, then the text
DIRECTIVE_MAX_SECONDS = 7 * 86400  # a longer back-off is a typo, not a plan
_MIN_SEGMENT = 4096
_COPY_CHUNK = 1 << 20
_DROP_RETRY_SECONDS = 1.0
_FILE_MODE = 0o640


def tail_dir(path: Path) -> Path:
    return path.with_name(path.name + ".tail")


def _create(path: Path) -> int:
    """Open the log fresh; the directory is made only when missing (not a syscall per task)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        return os.open(path, flags, _FILE_MODE)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, _FILE_MODE)


@dataclass
class _Segment:
    start: int  # output offset of its first byte
    length: int

    def name(self) -> str:
        return f"{self.start:020d}"


class TaskLog:
    """Writer for one task's output; see the module docstring for the layout."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max(2, max_bytes)
        self.head_limit = self.max_bytes // 2
        self.tail_limit = self.max_bytes - self.head_limit
        self.segment_size = max(self.tail_limit // 8, _MIN_SEGMENT)
        self.bytes_written = 0
        self.progress: str | None = None
        # Called (from the reading thread) when a new progress line is seen, so the pool can
        # record it at once instead of at the next heartbeat; it must not block.
        self.on_progress: Callable[[], None] | None = None
        # The last `::retry-after` and `::throttle` lines: (seconds, reason or None).
        self.retry_after: tuple[float, str | None] | None = None
        self.throttle: tuple[float, str | None] | None = None
        self.throttles = 0  # how many `::throttle` lines were seen (the pool applies new ones)
        self.dropped = False
        self._tail = tail_dir(path)
        if os.path.lexists(self._tail):  # left by an earlier run under this name
            shutil.rmtree(self._tail, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(map_path(path))
        # The file is created at the first output: a task that prints nothing costs no file
        # (a lookup is ~30x cheaper than a create). A stale one of the same name goes.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._head_fd: int | None = None
        self._head_len = 0
        self._head_open = True  # False once full or after a failed write
        self._segs: deque[_Segment] = deque()
        self._seg_fd: int | None = None
        self._retained = 0
        self._retry_at = 0.0
        self._failing = False
        self._closed = False
        self._line: bytes | None = b""  # start of the current line while it may be a directive
        self._capture: bytearray | None = None  # text of the directive line being read

    # -- writing --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not data or self._closed:
            return
        self._scan_progress(data)
        start = self.bytes_written
        self.bytes_written += len(data)
        view = memoryview(data)
        if self._head_open and self._head_fd is None:
            try:
                self._head_fd = _create(self.path)
            except OSError as exc:
                self._fail(exc)
                self._head_open = False
        if self._head_open and self._head_fd is not None:
            n = min(len(view), self.head_limit - self._head_len)
            done = self._write_all(self._head_fd, view[:n])
            self._head_len += done
            if done < n:
                self._head_open = False
                return
            if self._head_len >= self.head_limit:
                self._head_open = False
            view = view[n:]
            start += n
        if view:
            self._write_tail(view, start)

    def _write_all(self, fd: int, data: memoryview) -> int:
        """Write everything or report how much got out; a failure starts a drop episode."""
        done = 0
        while done < len(data):
            try:
                done += os.write(fd, data[done:])
            except OSError as exc:
                self._fail(exc)
                return done
        if self._failing:
            log.info("log %s: writing again after dropping output", self.path)
            self._failing = False
        return done

    def _fail(self, exc: OSError) -> None:
        self.dropped = True
        self._retry_at = time.monotonic() + _DROP_RETRY_SECONDS
        if not self._failing:
            log.warning("log %s: output dropped: %s", self.path, exc.strerror or exc)
        self._failing = True

    def _write_tail(self, view: memoryview, start: int) -> None:
        if self._failing and time.monotonic() < self._retry_at:
            self._close_segment()  # the next segment starts after the gap
            return
        while view:
            full = self._seg_fd is None or self._segs[-1].length >= self.segment_size
            if full and not self._open_segment(start):
                return
            seg = self._segs[-1]
            n = min(len(view), self.segment_size - seg.length)
            assert self._seg_fd is not None
            done = self._write_all(self._seg_fd, view[:n])
            seg.length += done
            self._retained += done
            if done < n:
                self._close_segment()
                return
            view = view[n:]
            start += n
            self._prune()

    def _open_segment(self, start: int) -> bool:
        self._close_segment()
        seg = _Segment(start, 0)
        try:
            self._tail.mkdir(exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            self._seg_fd = os.open(self._tail / seg.name(), flags, _FILE_MODE)
        except OSError as exc:
            self._fail(exc)
            return False
        self._segs.append(seg)
        return True

    def _close_segment(self) -> None:
        if self._seg_fd is not None:
            os.close(self._seg_fd)
            self._seg_fd = None

    def _prune(self) -> None:
        """Drop the oldest segments while the rest still cover the whole tail budget."""
        while len(self._segs) > 1 and self._retained - self._segs[0].length >= self.tail_limit:
            old = self._segs.popleft()
            self._retained -= old.length
            with contextlib.suppress(OSError):
                os.unlink(self._tail / old.name())

    # -- progress -------------------------------------------------------------------------

    def _scan_progress(self, data: bytes) -> None:
        """Find `::` directive lines without buffering lines: only the first bytes of a
        directive line are kept, and other lines are skipped with C-speed searches."""
        pos, end = 0, len(data)
        plen = len(DIRECTIVE_PREFIX)
        while pos < end:
            if self._capture is not None:
                nl = data.find(b"\n", pos)
                stop = end if nl < 0 else nl
                room = _CAPTURE_MAX - len(self._capture)
                if room > 0:
                    self._capture += data[pos : min(stop, pos + room)]
                if nl < 0:
                    return
                self._end_progress()
                self._line, pos = b"", nl + 1
                continue
            if self._line is not None:
                piece = data[pos : pos + plen - len(self._line)]
                cut = piece.find(b"\n")
                if cut >= 0:
                    self._line, pos = b"", pos + cut + 1
                    continue
                candidate = self._line + piece
                if not DIRECTIVE_PREFIX.startswith(candidate):
                    self._line = None  # an ordinary line: fall through to the search
                elif len(candidate) == plen:
                    self._line, self._capture = None, bytearray()
                    pos += len(piece)
                    continue
                else:
                    self._line = candidate  # the chunk ended inside a possible prefix
                    return
            hit = data.find(b"\n" + DIRECTIVE_PREFIX, pos)
            if hit >= 0:
                self._line, pos = b"", hit + 1
                continue
            last = data.rfind(b"\n", max(pos, end - plen), end)
            if last < 0:
                return
            self._line, pos = b"", last + 1

    def _end_progress(self) -> None:
        if self._capture is None:
            return
        word, _, raw = bytes(self._capture).partition(b" ")
        self._capture = None
        if word in (b"retry-after", b"throttle"):
            self._back_off(word, raw)
            return
        if word != b"progress":
            return
        raw = raw[:PROGRESS_MAX]
        # A capture cut at PROGRESS_MAX may end inside a character: leave that part out.
        full = len(raw) >= PROGRESS_MAX
        text = codecs.getincrementaldecoder("utf-8")("replace").decode(raw, final=not full)
        text = text.strip()
        encoded = text.encode()
        if len(encoded) > PROGRESS_MAX:
            text = encoded[:PROGRESS_MAX].decode("utf-8", "ignore").rstrip()
        if text and text != self.progress:
            self.progress = text
            if self.on_progress is not None:
                try:
                    self.on_progress()
                except Exception:  # telling about progress must never stop the copying
                    log.exception("log %s: recording progress failed", self.path)

    def _back_off(self, word: bytes, raw: bytes) -> None:
        """`SECONDS [reason]`; a line that does not parse is ignored (it stays in the log)."""
        seconds_text, _, reason_raw = raw.strip().partition(b" ")
        try:
            seconds = float(seconds_text)
        except ValueError:
            return
        if not 0 <= seconds <= DIRECTIVE_MAX_SECONDS:
            return
        reason = reason_raw.decode("utf-8", "replace").strip()[:200] or None
        if word == b"throttle":
            self.throttle = (seconds, reason)
            self.throttles += 1
        else:
            self.retry_after = (seconds, reason)

    # -- closing --------------------------------------------------------------------------

    def close(self) -> None:
        """Flush the last progress line and assemble the final file. Idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        self._end_progress()
        self._close_segment()
        try:
            if self._segs or self.dropped:
                self._assemble()
        finally:
            if self._head_fd is not None:
                os.close(self._head_fd)
                self._head_fd = None

    def _assemble(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        old = self._tail.with_name(self._tail.name + ".old")
        try:
            pieces: list[Piece] = []
            with open(tmp, "wb") as out:
                self._copy_head(out, pieces)
                self._copy_tail(out, pieces)
                size = out.tell()
            if self.dropped:  # the layout is not head + one marker + tail: say what it is
                write_map(map_path(self.path), size, pieces, self.bytes_written)
            # Hide the segments before replacing the head, so a reader never sees both the
            # final file and segments it already contains.
            if self._tail.exists():
                self._tail.rename(old)
            os.replace(tmp, self.path)
        except OSError as exc:
            self.dropped = True
            log.warning("log %s: could not assemble head and tail: %s", self.path, exc)
            tmp.unlink(missing_ok=True)
            if old.exists() and not self._tail.exists():
                old.rename(self._tail)  # keep the running layout, which read_log understands
            return
        shutil.rmtree(old, ignore_errors=True)

    def _copy_head(self, out: BinaryIO, pieces: list[Piece]) -> None:
        if self._head_fd is None:  # it could not be created: the marker covers its bytes
            return
        pieces.append(Piece(0, out.tell(), self._head_len))
        copy_range(self._head_fd, 0, self._head_len, out)

    def _copy_tail(self, out: BinaryIO, pieces: list[Piece]) -> None:
        skip = max(0, self._retained - self.tail_limit)
        expected = self._head_len  # output offset the file has reached
        for seg in self._segs:
            first = min(skip, seg.length)
            skip -= first
            if first == seg.length:
                continue
            begin = seg.start + first
            if begin > expected:
                out.write(MARKER % (begin - expected))
            fd = os.open(self._tail / seg.name(), os.O_RDONLY | os.O_CLOEXEC)
            pieces.append(Piece(begin, out.tell(), seg.length - first))
            try:
                copy_range(fd, first, seg.length - first, out)
            finally:
                os.close(fd)
            expected = seg.start + seg.length
        if self.bytes_written > expected:
            out.write(MARKER % (self.bytes_written - expected))


def copy_range(src: int, offset: int, length: int, out: BinaryIO) -> None:
    while length > 0:
        chunk = os.pread(src, min(length, _COPY_CHUNK), offset)
        if not chunk:
            return
        out.write(chunk)
        offset += len(chunk)
        length -= len(chunk)


class Piece(NamedTuple):
    """Stored output in an assembled log: its output offset, where it is in the file, and
    its length."""

    start: int
    file_offset: int
    length: int


def map_path(path: Path) -> Path:
    return path.with_name(path.name + ".map")


def write_map(path: Path, size: int, pieces: list[Piece], end: int) -> None:
    """The pieces of an assembled log of `size` bytes, and the output's length `end` (a
    reader checks the size: a map that does not match the file describes another version
    of it)."""
    tmp = path.with_name(path.name + ".tmp")
    body = {"size": size, "end": end, "pieces": [list(p) for p in pieces]}
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)


def read_map(path: Path, size: int) -> list[Piece] | None:
    """The pieces of the assembled log at `path`, if it has a map for this size; output
    dropped at the end is a last piece of length 0 where the output ended."""
    try:
        raw = json.loads(map_path(path).read_text())
        if raw["size"] != size:
            return None
        pieces = [Piece(int(a), int(b), int(c)) for a, b, c in raw["pieces"]]
        end = int(raw["end"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    reached = pieces[-1].start + pieces[-1].length if pieces else 0
    if end > reached:
        pieces.append(Piece(end, size, 0))
    return pieces


def remove_log(path: Path) -> int:
    """Delete a task's log and what a crash may have left (segments, temporary file);
    return the bytes freed. Missing files are fine."""
    folders = [tail_dir(path), path.with_name(path.name + ".tail.old")]
    files = [path, path.with_name(path.name + ".tmp"), map_path(path)]
    files.append(map_path(path).with_name(map_path(path).name + ".tmp"))
    for folder in folders:
        with contextlib.suppress(OSError):
            files.extend(folder / name for name in os.listdir(folder))
    freed = 0
    for item in files:
        with contextlib.suppress(OSError):
            size = item.stat().st_size
            item.unlink()
            freed += size
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()
    return freed
