"""A rollout set written a group at a time, as the groups of a run finish.

While the run goes on the groups go to OUT.partial, one group's JSON a line after a header line (the set's model and
sampling), each line flushed as it is written and pushed to the disk at least every second: a crash loses at most the
groups of its last second, and the file is read back by read_groups (a last line cut short is left out), so a run
killed outright can be resumed from it. When the run ends, stopped or not, the set is written to OUT (schema v1, with
the run's timings) by copying those lines, without parsing them again, and OUT.partial goes. Memory holds one group.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Generator, Iterator, Optional

from explorer.core.errors import RolloutFileError
from explorer.core.files import export
from explorer.core.types import QueryGroup, RolloutSet, Timings

FORMAT = "rollout-explorer/dataset-run"
VERSION = 1
SYNC_EVERY_S = 1.0


def partial_path(output: str) -> Optional[Path]:
    """Where the groups of a run writing `output` go until it ends (None for stdout: a temporary file then)."""
    return None if output == "-" else Path(f"{output}.partial")


class SetWriter:
    """See the module docstring. header: the set without groups (its model, sampling and reference policy)."""

    def __init__(self, output: str, header: RolloutSet):
        self.output = output
        self.header = replace(header, groups=())
        self.groups_written = 0
        path = partial_path(output)
        if path is None:
            fd, name = tempfile.mkstemp(prefix="rollout-explorer-", suffix=".partial")
            os.close(fd)
            path = Path(name)
        self.path = path
        try:
            self._handle = open(self.path, "w", encoding="utf-8", newline="\n")
        except OSError as e:
            raise RolloutFileError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._write(export.json_text({"format": FORMAT, "version": VERSION, "set": export.to_dict(self.header)}))
        self._synced = time.monotonic()

    def _write(self, line: str) -> None:
        try:
            self._handle.write(line + "\n")
            self._handle.flush()
        except OSError as e:
            raise RolloutFileError(f"cannot write {self.path}: {e.strerror or e}") from None

    def add(self, group: QueryGroup) -> None:
        self._write(export.json_text(export.group_to_json(group)))
        self.groups_written += 1
        if time.monotonic() - self._synced >= SYNC_EVERY_S:
            os.fsync(self._handle.fileno())
            self._synced = time.monotonic()

    def _chunks(self, timings: Timings) -> Iterator[str]:
        head = export.json_text(export.to_dict(replace(self.header, timings=timings)))
        assert head.endswith('"groups":[]}')  # groups is the last key of to_dict
        yield head[:-2]
        with open(self.path, encoding="utf-8") as lines:
            next(lines)  # the header line
            for i, line in enumerate(lines):
                yield ("," if i else "") + line.rstrip("\n")
        yield "]}\n"

    def finish(self, timings: Timings) -> None:
        """Write the set to the output (atomically) and remove the partial file."""
        self._handle.close()
        export.atomic_write(self.output, self._chunks(timings))
        self.path.unlink(missing_ok=True)

    def keep(self) -> None:
        """The run ends without a set: the partial file stays (a later run resumes from it)."""
        if not self._handle.closed:
            self._handle.close()

    def abandon(self) -> None:
        """Nothing worth a set was made: the partial file goes, the output is left as it was."""
        if not self._handle.closed:
            self._handle.close()
        self.path.unlink(missing_ok=True)


def read_groups(path: str) -> Generator[QueryGroup, None, RolloutSet]:
    """The groups of a rollout set, or of a run's partial file, one at a time; returns the set without its groups
    (its model and sampling) once all are read: `header = yield from read_groups(path)`. Raises RolloutFileError."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 20)
    except OSError as e:
        raise RolloutFileError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        head = json.loads(first)
    except (json.JSONDecodeError, UnicodeDecodeError):
        head = None
    if not (isinstance(head, dict) and head.get("format") == FORMAT):
        return (yield from export.walk_set(path))
    if head.get("version") != VERSION or not isinstance(head.get("set"), dict):
        raise RolloutFileError(f"{path}: a dataset run's partial file of another version")
    header = export.loads(json.dumps({**head["set"], "groups": []}), f"{path} (header)")
    pieces: dict = {}
    with open(path, "rb") as f:
        f.readline()
        number = 1
        for raw in f:
            number += 1
            if not raw.endswith(b"\n"):
                break  # the line a crash cut short
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise RolloutFileError(f"{path}: line {number} is not UTF-8 text") from None
            if text.strip():
                yield export.group_from_text(text, f"{path}: line {number}", pieces)
    return header
