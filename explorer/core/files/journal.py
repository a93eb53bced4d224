"""The crash-recovery journal: a run in progress, saved append-only, so that a crash loses at most what came since
the last flush (about a second of tokens) and never leaves an unreadable file.

The file is JSON Lines. The first line names the format; the second is a checkpoint, a whole rollout set (what was
on screen when the journal began: earlier runs, their rewards and scores). Every later line is one engine event
of the run since: a run's start (group and rollout headers), a batch of tokens, a finished rollout, the run's end.
Appending a line costs what that line holds, not the size of the set, so a large set is not rewritten every few
seconds. A journal begins afresh (written to a temporary file, then renamed over the old one) at a checkpoint:
when a run starts or a finished set changes.

Reading rebuilds the set: the checkpoint, then the events replayed in order; a rollout still streaming when the
journal ends is kept as `cancelled`. A last line cut short by a crash is left out; every line is checked like a
rollout-set file (the same schema and ranges).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Iterator, Optional

from explorer.core.files import export
from explorer.core.errors import RolloutFileError
from explorer.core.types import (
    Event, QueryGroup, Rollout, RolloutFinished, RolloutSet, RunFinished, RunStarted, TokenBatch, TokenInfo,
)

FORMAT = "rollout-explorer/run-journal"
VERSION = 1


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"


def event_records(events: Iterable[Event]) -> Iterator[dict]:
    """The journal lines (as dicts) of engine events; TokenBatches become one line each."""
    for event in events:
        if isinstance(event, TokenBatch):
            yield {"tokens": [[e.rollout_id, e.position, export.token_to_json(e.token), e.text] for e in event.events]}
        elif isinstance(event, RolloutFinished):
            yield {"finished": event.group_id, "rollout": export.rollout_to_json(event.rollout)}
        elif isinstance(event, RunStarted):
            yield {"run": {
                "is_branch": event.is_branch,
                # a branch's rollouts carry the parameters that drew them (the set's are the first generate's)
                "sampling": export.sampling_to_json(event.sampling) if event.is_branch else None,
                "groups": [{"id": g.id, "query": g.query, "chat": g.chat, "prompt": g.prompt,
                            "prompt_token_ids": list(g.prompt_token_ids), "reference": g.reference_answer,
                            "columns": dict(g.columns), "messages": [list(m) for m in g.messages]}
                           for g in event.groups],
                "rollouts": [{"group_id": h.group_id, "id": h.rollout_id, "index": h.index, "seed": h.seed,
                              "parent_id": h.parent_id, "branch_position": h.branch_position,
                              "prefix": [export.token_to_json(t) for t in h.prefix], "prefix_text": h.prefix_text,
                              **({} if h.value_position is None else {"value_position": h.value_position})}
                             for h in event.rollouts]}}
        elif isinstance(event, RunFinished):
            yield {"run_finished": {"cancelled": event.cancelled}}


class JournalWriter:
    """Writes one journal. Not thread-safe: one thread (the autosave thread) calls it."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        self._handle = None

    def begin(self, checkpoint: RolloutSet) -> None:
        """Start the journal afresh from this set (atomically: the old journal stays whole until the rename)."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        export.atomic_write(self.path, [_line({"format": FORMAT, "version": VERSION}),
                                        _line({"checkpoint": export.to_dict(checkpoint)})])
        self._handle = open(self.path, "a", encoding="utf-8", newline="\n")

    @property
    def started(self) -> bool:
        return self._handle is not None

    def append(self, events: Iterable[Event]) -> None:
        """Append events and push them to the disk: what this returns from survives a crash of the process."""
        if self._handle is None:
            raise RuntimeError("journal not begun")
        self._handle.write("".join(_line(r) for r in event_records(events)))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class _Replay:
    """The set a journal describes, rebuilt line by line."""

    def __init__(self, checkpoint: RolloutSet):
        self.base = checkpoint
        self.groups: dict[str, QueryGroup] = {g.id: g for g in checkpoint.groups}
        self.order: list[str] = list(self.groups)
        self.rollouts: dict[str, dict[str, Rollout]] = {g.id: {r.id: r for r in g.rollouts}
                                                        for g in checkpoint.groups}
        self.live: dict[str, tuple[str, list[TokenInfo], list[str], dict]] = {}
        self.pieces: dict = {}

    def take(self, record: dict, where: str) -> None:
        if "run" in record:
            run = record["run"]
            for g in run["groups"]:
                if g["id"] not in self.groups:
                    self.groups[g["id"]] = QueryGroup(
                        g["id"], g["query"], g["chat"], g["prompt"], tuple(g["prompt_token_ids"]),
                        reference_answer=g.get("reference"), columns=tuple((g.get("columns") or {}).items()),
                        messages=tuple((str(role), str(content)) for role, content in g.get("messages") or ()))
                    self.order.append(g["id"])
                    self.rollouts[g["id"]] = {}
            sampling = None if run.get("sampling") is None else export.sampling_from_json(run["sampling"],
                                                                                        f"{where}.sampling")
            for h in run["rollouts"]:
                prefix = [export.token_from_json(t, f"{where}.prefix", self.pieces) for t in h["prefix"]]
                self.live[h["id"]] = (h["group_id"], prefix, [h["prefix_text"]], {**h, "sampling": sampling})
        elif "tokens" in record:
            for rollout_id, position, token, text in record["tokens"]:
                live = self.live.get(rollout_id) or self._resumed(rollout_id)
                if live is not None and position == len(live[1]):  # a token the checkpoint already holds: skip
                    live[1].append(export.token_from_json(token, f"{where}.tokens", self.pieces))
                    live[2].append(text)
        elif "finished" in record:
            rollout = export.rollout_from_json(record["rollout"], f"{where}.rollout", self.pieces)
            self.live.pop(rollout.id, None)
            self.rollouts.setdefault(record["finished"], {})[rollout.id] = rollout

    def _resumed(self, rollout_id: str):
        """A rollout the checkpoint holds as cancelled that goes on streaming after it (a checkpoint taken mid-run
        marks the streaming rollouts cancelled): it becomes live again, from its tokens so far."""
        for group_id, rollouts in self.rollouts.items():
            r = rollouts.get(rollout_id)
            if r is not None and r.finish_reason == "cancelled":
                header = {"index": r.index, "seed": r.seed, "parent_id": r.parent_id,
                          "branch_position": r.branch_position, "sampling": r.sampling,
                          "value_position": r.value_position}
                live = self.live[rollout_id] = (group_id, list(r.tokens), [r.text], header)
                return live
        return None

    def rollout_set(self) -> RolloutSet:
        for rollout_id, (group_id, tokens, texts, h) in self.live.items():
            self.rollouts[group_id][rollout_id] = Rollout(
                id=rollout_id, index=h["index"], seed=h["seed"], text="".join(texts), tokens=tuple(tokens),
                finish_reason="cancelled", parent_id=h["parent_id"], branch_position=h["branch_position"],
                sampling=h["sampling"], value_position=h.get("value_position"))
        groups = tuple(replace(self.groups[gid], rollouts=tuple(sorted(self.rollouts[gid].values(),
                                                                       key=lambda r: r.index)))
                       for gid in self.order)
        return replace(self.base, groups=groups)


def read_journal(path: os.PathLike | str) -> RolloutSet:
    """The set a journal holds. Raises RolloutFileError (one line, with the place) for a journal that cannot be
    read; a last line cut short by a crash is not an error."""
    shown = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise RolloutFileError(f"cannot read {shown}: {e.strerror or e}") from None
    lines = data.split(b"\n")
    if lines and lines[-1]:
        lines = lines[:-1]  # no newline after it: the write that a crash cut off
    try:
        text_lines = [line.decode("utf-8") for line in lines if line.strip()]
        records = [json.loads(line) for line in text_lines]
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RolloutFileError(f"{shown}: not a readable journal ({e})") from None
    if len(records) < 2 or records[0] != {"format": FORMAT, "version": VERSION} or "checkpoint" not in records[1]:
        raise RolloutFileError(f"{shown}: not a run journal of this version (no header and checkpoint)")
    replay = _Replay(export.loads(json.dumps(records[1]["checkpoint"]), f"{shown} (checkpoint)"))
    for number, record in enumerate(records[2:], start=3):
        try:
            replay.take(record, f"line {number}")
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise RolloutFileError(f"{shown}: line {number} is not a journal event ({type(e).__name__}: {e})") \
                from None
        except RolloutFileError as e:
            raise RolloutFileError(f"{shown}: {e}") from None
    return replay.rollout_set()


def journal_exists(path: os.PathLike | str) -> Optional[int]:
    """The journal's size in bytes when there is one to offer, else None."""
    try:
        return Path(path).stat().st_size
    except OSError:
        return None
