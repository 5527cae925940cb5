"""Reading a task's log (see writer.py for the layout): by output offset, across the
running head + tail segments and the final assembled file alike, so a follower keeps its
place across the cap and across the final assembly. Omitted ranges read as the marker line;
invalid UTF-8 is replaced only here."""

from __future__ import annotations

import codecs
import io
import os
from dataclasses import dataclass
from pathlib import Path

from syncd.tasklog.writer import (
    MARKER,
    MARKER_FIXED,
    MARKER_RE,
    copy_range,
    read_map,
    tail_dir,
)


@dataclass
class _Piece:
    start: int  # output offset
    fd: int
    file_offset: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


def _final_layout(fd: int, size: int) -> tuple[int, int, int] | None:
    """(head length, omitted bytes, marker length) if the file is an assembled capped log.

    The writer makes the tail exactly `max_bytes - max_bytes // 2`, i.e. the head length or
    one more, so the marker's position follows from the file size and the marker length."""
    for digits in range(1, 21):
        marker_len = MARKER_FIXED + digits
        for extra in (0, 1):
            twice_head = size - marker_len - extra
            if twice_head <= 0 or twice_head % 2:
                continue
            head = twice_head // 2
            match = MARKER_RE.fullmatch(os.pread(fd, marker_len, head))
            if match and len(match.group(1)) == digits:
                return head, int(match.group(1)), marker_len
    return None


def _open_segments(path: Path) -> list[_Piece]:
    pieces: list[_Piece] = []
    try:
        names = sorted(n for n in os.listdir(tail_dir(path)) if n.isdigit())
    except OSError:
        return pieces
    for name in names:
        try:
            fd = os.open(tail_dir(path) / name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # rotated away since the listing: it becomes part of the omitted gap
        pieces.append(_Piece(int(name), fd, 0, os.fstat(fd).st_size))
    return pieces


def _layout(fd: int, path: Path) -> tuple[list[_Piece], bool]:
    size = os.fstat(fd).st_size
    mapped = read_map(path, size)
    if mapped is not None:  # assembled after output was dropped: gaps anywhere
        return [_Piece(p.start, fd, p.file_offset, p.length) for p in mapped], True
    final = _final_layout(fd, size)
    if final is not None:
        head, omitted, marker_len = final
        tail = _Piece(head + omitted, fd, head + marker_len, size - head - marker_len)
        return [_Piece(0, fd, 0, head), tail], True
    pieces = [_Piece(0, fd, 0, size)]
    segments = _open_segments(path)
    for seg in segments:
        if seg.start < pieces[-1].end:  # inconsistent (a concurrent close): ignore the tail
            for s in segments:
                os.close(s.fd)
            return pieces[:1], False
        pieces.append(seg)
    return pieces, len(pieces) > 1


@dataclass(frozen=True)
class LogSlice:
    """Part of a log: its text, where it ends (the offset to pass back), whether the log
    was capped, and the output's whole length so far (`end`: where a tail starts from)."""

    text: str
    next_offset: int
    capped: bool
    end: int


def read_slice(
    path: Path, offset: int = 0, limit: int = 1 << 20, *, final: bool = True
) -> LogSlice:
    """Up to `limit` bytes of output from output offset `offset`.

    Text is decoded with replacement characters and shows omitted ranges as the marker
    line. The next offset is where the returned text ends: the log's whole output length
    when it reaches the end, so a follower passes it back as `offset`. A character cut by
    the limit (or, unless `final`, by the end of what a running task wrote so far) is left
    for the next read rather than replaced. Raises FileNotFoundError if there is no log."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pieces, capped = _layout(fd, path)
        try:
            data, pos = _extract(pieces, max(0, offset), max(0, limit))
        finally:
            for piece in pieces:
                if piece.fd != fd:
                    os.close(piece.fd)
    finally:
        os.close(fd)
    end = pieces[-1].end if pieces else 0
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    text = decoder.decode(data, final=final and pos >= end)
    held = len(decoder.getstate()[0])  # the start of a character whose rest comes later
    return LogSlice(text, pos - held, capped, end)


def read_log(
    path: Path, offset: int = 0, limit: int = 1 << 20, *, final: bool = True
) -> tuple[str, int, bool]:
    """(text, next offset, capped): `read_slice` without the end."""
    got = read_slice(path, offset, limit, final=final)
    return got.text, got.next_offset, got.capped


def _extract(pieces: list[_Piece], offset: int, limit: int) -> tuple[bytes, int]:
    total = pieces[-1].end if pieces else 0
    pos = min(offset, total)
    out = bytearray()
    budget = limit
    for piece in pieces:
        if budget <= 0:
            break
        if piece.end <= pos:
            continue
        if piece.start > pos:
            out += MARKER % (piece.start - pos)
            pos = piece.start
        want = min(piece.end - pos, budget)
        sink = io.BytesIO()
        copy_range(piece.fd, piece.file_offset + pos - piece.start, want, sink)
        got = sink.getvalue()
        out += got
        pos += len(got)
        budget -= len(got)
        if len(got) < want:  # the file shrank under us: stop at what is there
            break
    return bytes(out), pos
