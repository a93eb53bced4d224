"""A rollout set as a trainer's dataset: one row per rollout, in JSONL or Parquet, with the columns TRL or verl read.

TRL (`--for trl`): `prompt` as the dataset gave it (a string, or a list of {"role", "content"} messages) and
`completion` in the same form (text, or [{"role": "assistant", "content": text}]): TRL's prompt-completion type in its
standard or conversational format (a set that mixes the two is written all conversational, a text prompt as one
user message: a column has one type). The dataset's other columns follow as they were (TRL hands them to reward
functions as keyword arguments).
verl (`--for verl`): its RL parquet's columns, `data_source`, `prompt` (messages; a text prompt becomes one user
message), `ability`, `reward_model` ({"style", "ground_truth"}: the dataset's own, else the reference answer as a rule
reward's ground truth) and `extra_info` (the dataset's, with the group, rollout and index added), and `response`, the
rollout's text.
Both then carry `reward`, `advantage`, the token ids and per-token log-probabilities: `prompt_token_ids`,
`completion_token_ids`, `token_logprobs` (raw log pi of each completion token, aligned with the ids),
`sampling_logprobs` (under the sampler), `ref_logprobs` (log pi_ref, with a reference policy), and `group_id`, `rollout_id`,
`finish_reason`, `in_baseline`. A log-probability of -inf is null. A dataset column whose name is one of these is left
out (the export's own wins), with a warning.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

from explorer.core.errors import ExplorerError
from explorer.core.files.export import PathLike, atomic_write, iter_groups, json_text
from explorer.core.numbers import json_number
from explorer.core.rl.stats import in_baseline
from explorer.core.types import QueryGroup, Rollout

TRAINERS = ("trl", "verl")
PARQUET_ROW_GROUP = 64  # groups per Parquet row group: memory holds these, whatever the set's size


class TrainerExportError(ExplorerError):
    """A set that cannot be written in the form asked."""


def _messages(g: QueryGroup) -> list[dict]:
    if g.messages:
        return [{"role": role, "content": content} for role, content in g.messages]
    return [{"role": "user", "content": g.query}]


def _own_columns(g: QueryGroup, r: Rollout) -> dict:
    tokens = r.tokens
    own = {
        "reward": json_number(r.reward),
        "advantage": json_number(r.advantage),
        "prompt_token_ids": [int(i) for i in g.prompt_token_ids],
        "completion_token_ids": [int(t.id) for t in tokens],
        "token_logprobs": [json_number(t.logprob) for t in tokens],
        "sampling_logprobs": [json_number(t.sampling_logprob) for t in tokens],
        "group_id": g.id,
        "rollout_id": r.id,
        "finish_reason": r.finish_reason or "cancelled",
        "in_baseline": in_baseline(r),
    }
    if any(t.ref_logprob is not None for t in tokens):
        own["ref_logprobs"] = [json_number(t.ref_logprob) for t in tokens]
    return own


def trl_record(g: QueryGroup, r: Rollout, conversational: bool) -> dict:
    return {
        "prompt": _messages(g) if conversational else g.query,
        "completion": [{"role": "assistant", "content": r.text}] if conversational else r.text,
        **_own_columns(g, r),
    }


def verl_record(g: QueryGroup, r: Rollout, conversational: bool = True) -> dict:
    columns = dict(g.columns)
    reward_model = columns.get("reward_model")
    if not isinstance(reward_model, dict):
        reward_model = {"style": "rule", "ground_truth": g.reference_answer}
    extra = columns.get("extra_info")
    extra = dict(extra) if isinstance(extra, dict) else {}
    extra.update(group_id=g.id, rollout_id=r.id, index=int(r.index))
    return {
        "data_source": str(columns.get("data_source") or "rollout-explorer"),
        "prompt": _messages(g),
        "ability": str(columns.get("ability") or "unknown"),
        "reward_model": reward_model,
        "extra_info": extra,
        "response": r.text,
        **_own_columns(g, r),
    }


_RECORDS = {"trl": trl_record, "verl": verl_record}


def records(groups: Iterable[QueryGroup], trainer: str, warn: Optional[Callable[[str], None]] = None,
            conversational: bool = False) -> Iterator[dict]:
    """One record per rollout, the export's own columns first, then the dataset's other columns. conversational:
    every TRL prompt as messages (a set that mixes text and conversations: a column holds one type)."""
    if trainer not in _RECORDS:
        raise TrainerExportError(f"unknown trainer {trainer!r}: choose {' or '.join(TRAINERS)}")
    build = _RECORDS[trainer]
    warned: set[str] = set()
    for g in groups:
        for r in g.rollouts:
            record = build(g, r, conversational or bool(g.messages))
            for name, value in g.columns:
                if name not in record:
                    record[name] = value
                elif name not in warned and not (trainer == "verl" and name in ("data_source", "ability",
                                                                                 "reward_model", "extra_info")):
                    warned.add(name)
                    if warn is not None:
                        warn(f"the dataset's column {name!r} is left out: the export has a column of that name")
            yield record


def export_file(source: PathLike, output: str, trainer: str = "trl", fmt: Optional[str] = None,
                warn: Optional[Callable[[str], None]] = None) -> int:
    """A rollout-set file as a trainer's dataset (fmt "jsonl" or "parquet"; None: by the output's suffix), a group
    at a time; written atomically, and only if the whole set is valid. Returns the rows written."""
    fmt = fmt or ("parquet" if str(output).lower().endswith(".parquet") else "jsonl")
    # one pass ahead (it stops at the first conversation): are the prompts all text, or some conversations?
    conversational = trainer == "trl" and any(g.messages for g in iter_groups(source))
    rows = records(iter_groups(source), trainer, warn, conversational)
    if fmt == "jsonl":
        counter = [0]

        def lines():
            for record in rows:
                counter[0] += 1
                yield json_text(record) + "\n"

        atomic_write(output, lines())
        return counter[0]
    if fmt == "parquet":
        if output == "-":
            raise TrainerExportError("Parquet is not written to stdout: give a file name")
        return _write_parquet(rows, output)
    raise TrainerExportError(f"unknown format {fmt!r}: choose jsonl or parquet")


def _write_parquet(rows: Iterator[dict], output: str) -> int:
    """Rows to Parquet in row groups; the schema is inferred from the first row group's rows, and later ones are
    cast to it (a column whose type changes is an error naming it)."""
    import os
    import secrets
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    target = Path(output)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    writer = None
    n = 0
    try:
        batch: list[dict] = []
        groups_in_batch = 0
        last_group = None
        schema = None

        def flush():
            nonlocal writer, schema
            if not batch:
                return
            try:
                table = _inferred(batch) if schema is None else _cast(batch, schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise TrainerExportError(f"cannot write {output} as Parquet: {str(exc).splitlines()[0]}") from None
            if schema is None:
                schema = _typed(table.schema)
                table = table.cast(schema)
                writer = pq.ParquetWriter(tmp, schema)
            writer.write_table(table)
            batch.clear()

        for record in rows:
            if record["group_id"] != last_group:
                last_group = record["group_id"]
                groups_in_batch += 1
                if groups_in_batch > PARQUET_ROW_GROUP:
                    flush()
                    groups_in_batch = 1
            batch.append(record)
            n += 1
        flush()
        if writer is None:
            raise TrainerExportError(f"{output}: the set has no rollouts to export")
        writer.close()
        writer = None
        os.replace(tmp, target)
    except OSError as exc:
        raise TrainerExportError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return n


def _typed(schema):
    """The inferred schema with a type for what the first rows left null: a reward or advantage no rollout had is
    still a float, a column seen only as null becomes text."""
    import pyarrow as pa

    fields = []
    for f in schema:
        if f.name in ("reward", "advantage"):
            f = f.with_type(pa.float64())
        elif pa.types.is_null(f.type):
            f = f.with_type(pa.string())
        elif pa.types.is_list(f.type) and pa.types.is_null(f.type.value_type):
            f = f.with_type(pa.list_(pa.float64() if f.name.endswith("logprobs") else pa.int64()))
        fields.append(f)
    return pa.schema(fields)


def _inferred(batch: list[dict]):
    """The rows as a table, every column any row has (in first-seen order), each column's type inferred from all of
    its values."""
    import pyarrow as pa

    names = list(dict.fromkeys(k for row in batch for k in row))
    return pa.table({name: pa.array([row.get(name) for row in batch]) for name in names})


def _cast(batch: list[dict], schema):
    import pyarrow as pa

    columns = {name: [row.get(name) for row in batch] for name in schema.names}
    extra = {k for row in batch for k in row} - set(schema.names)
    if extra:
        raise pa.ArrowInvalid(f"column {sorted(extra)[0]!r} first appears after the first rows")
    arrays = []
    for f in schema:
        try:
            arrays.append(pa.array(columns[f.name], type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise pa.ArrowInvalid(f"column {f.name!r} changes type ({str(exc).splitlines()[0]})") from None
    return pa.Table.from_arrays(arrays, schema=schema)
