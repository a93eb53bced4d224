"""Reading a rollout-set file's text: opened only if it is a regular file, decoded as strict UTF-8 with progress, and
walked in a sliding window (SlidingText) so that no file is ever parsed whole. What the values mean (the schema, the
conversion to types) is export.py's; this module only knows JSON text.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import stat
from typing import Any, Callable, Iterator, Optional

from explorer.core.errors import LoadCancelled, RolloutFileError

READ_CHUNK = 1 << 20
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_scanstring = json.decoder.scanstring


class SlidingText:
    """The text of a rollout-set file, read in a sliding window.

    Only the top level, the groups array, each group's members and its rollouts/scores arrays are walked here; every
    other value (one rollout, the model block, ...) is parsed by json's C decoder from the window. So memory holds
    the window plus one rollout's dicts at a time, never the whole file's dict tree (~8x the file's size). A value
    that runs past the window makes it grow (doubling, so re-parsing stays linear) until the value fits or the file
    ends; only then is a decoding error the file's.
    """

    def __init__(self, read: Callable[[int], str], source: str, cancel=None):
        self.read = read
        self.source = source
        self.cancel = cancel
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.lines_before = 0  # newlines in the text already dropped from the window (for error positions)
        self.column_before = 0  # characters after the last dropped newline

    def fill(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise LoadCancelled(f"{self.source}: loading cancelled")
        dropped = self.buf[: self.pos]
        newlines = dropped.count("\n")
        if newlines:
            self.lines_before += newlines
            self.column_before = len(dropped) - dropped.rfind("\n") - 1
        else:
            self.column_before += len(dropped)
        chunk = self.read(max(READ_CHUNK, len(self.buf) - self.pos))
        self.buf = self.buf[self.pos:] + chunk
        self.pos = 0
        if not chunk:
            self.eof = True

    def malformed(self, msg: str, pos: int) -> RolloutFileError:
        newline = self.buf.rfind("\n", 0, pos)
        line = self.lines_before + self.buf.count("\n", 0, pos) + 1
        column = pos - newline if newline >= 0 else self.column_before + pos + 1
        return RolloutFileError(f"{self.source}: malformed JSON at line {line} column {column}: {msg}")

    def peek(self) -> str:
        """The next character that is not whitespace ('' at the end of the file); pos is left on it."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if self.eof:
                return ""
            self.fill()

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                if not self.eof:
                    self.fill()
                    continue
                raise self.malformed(e.msg, e.pos) from None
            except RecursionError:
                raise RolloutFileError(f"{self.source}: malformed JSON: nested too deeply") from None
            if end == len(self.buf) and not self.eof:  # a number at the window's edge may go on in the next chunk
                self.fill()
                continue
            self.pos = end
            return obj

    def _key(self) -> str:
        while True:
            try:
                key, end = _scanstring(self.buf, self.pos + 1)
            except json.JSONDecodeError as e:
                if not self.eof:
                    self.fill()
                    continue
                raise self.malformed(e.msg, e.pos) from None
            self.pos = end
            return key

    def members(self) -> Iterator[str]:
        """The keys of the object at pos; after each, the caller consumes its value (value() or a walk)."""
        self.peek()
        self.pos += 1  # the caller saw the '{'
        c = self.peek()
        if c == "}":
            self.pos += 1
            return
        while True:
            if c != '"':
                raise self.malformed("Expecting property name enclosed in double quotes", self.pos)
            key = self._key()
            if self.peek() != ":":
                raise self.malformed("Expecting ':' delimiter", self.pos)
            self.pos += 1
            yield key
            c = self.peek()
            if c == "}":
                self.pos += 1
                return
            if c != ",":
                raise self.malformed("Expecting ',' delimiter", self.pos)
            self.pos += 1
            c = self.peek()

    def elements(self) -> Iterator[int]:
        """The indices of the array at pos; after each, the caller consumes the element."""
        self.peek()
        self.pos += 1
        if self.peek() == "]":
            self.pos += 1
            return
        index = 0
        while True:
            yield index
            index += 1
            c = self.peek()
            if c == "]":
                self.pos += 1
                return
            if c != ",":
                raise self.malformed("Expecting ',' delimiter", self.pos)
            self.pos += 1


def string_reader(s: str) -> Callable[[int], str]:
    position = 0

    def read(n: int) -> str:
        nonlocal position
        chunk = s[position: position + n]
        position += len(chunk)
        return chunk

    return read


class FileReader:
    """Bytes from a file decoded as strict UTF-8 (a BOM is dropped), with progress after every chunk."""

    def __init__(self, handle, path: str, total: int, progress: Optional[Callable[[int, int], None]]):
        self.handle = handle
        self.path = path
        self.total = total
        self.progress = progress
        self.done = 0
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")

    def __call__(self, n: int) -> str:
        data = self.handle.read(n)
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as e:
            offset = self.done + e.start
            raise RolloutFileError(f"{self.path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                                   f"{offset})") from None
        self.done += len(data)
        if self.progress is not None:
            self.progress(self.done, self.total)
        return text


def open_regular(path: str | os.PathLike[str]):
    """path opened for reading in binary, refused first unless it is a regular file: a FIFO would block for good, a
    device never ends."""
    try:
        info = os.stat(path)
    except OSError as e:
        raise RolloutFileError(f"cannot read {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(info.st_mode):
        raise RolloutFileError(f"cannot read {path}: it is a directory, not a rollout-set file")
    if not stat.S_ISREG(info.st_mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(info.st_mode) else \
            "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else \
            "a socket" if stat.S_ISSOCK(info.st_mode) else "not a regular file"
        raise RolloutFileError(f"cannot read {path}: it is {kind}, not a regular file")
    try:
        # O_NONBLOCK: had the path been swapped for a FIFO since the stat, opening it must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise RolloutFileError(f"cannot read {path}: {e.strerror or e}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise RolloutFileError(f"cannot read {path}: not a regular file")
    return os.fdopen(fd, "rb"), info.st_size
