"""Dataset rows -> queries: the columns RL datasets have, as TRL and verl write them.

A row is an object (a JSONL line, an item of a JSON list, a Parquet row). Its prompt is the first column of
PROMPT_COLUMNS it has (or the one chosen): a string, or a conversation, a list of {"role", "content"} messages (TRL's
conversational form, verl's `prompt`). Its reference answer is the first of ANSWER_COLUMNS it has (or the one chosen;
a dotted name reaches into an object, as verl's `reward_model.ground_truth`). Every column but the prompt stays with
the query as it was (Query.columns), the answer's too (`solution`, `answer`, `reward_model`...): a TRL reward function
gets them as keyword arguments, and an export gives them back. Only `reference`, this project's own name for the
answer, is not a column: the query's reference answer is it (edited in the window, it is what a file then holds).

A conversation becomes the chat prompt as it is: its system message is used (a run's --system applies only to rows
without one), earlier user and assistant turns stay, and the model answers as the assistant after the last message,
which must not be the assistant's own. The query's text is the last user message. Without a chat template (raw mode)
the messages' contents follow one another, a blank line between them.
"""

from __future__ import annotations

import datetime
import decimal
import math
from typing import Any, Callable, Iterable, Iterator, Optional

from explorer.core.errors import ExplorerError
from explorer.core.types import Query

PROMPT_COLUMNS = ("prompt", "query", "question", "problem")
# "reference" first: it is what this project's own files and the window's Save write for an answer typed or edited;
# it is the query's reference answer, not a column of the dataset's
OWN_ANSWER = "reference"
ANSWER_COLUMNS = (OWN_ANSWER, "reward_model.ground_truth", "answer", "solution", "ground_truth")
ROLES = ("system", "user", "assistant", "tool", "developer")


class DatasetRowError(ExplorerError):
    """A row of a dataset that cannot become a query."""


def _lookup(row: dict, column: str) -> tuple[bool, Any]:
    """(found, value) of a column; a dotted name reaches into nested objects ("reward_model.ground_truth")."""
    if column in row:
        return True, row[column]
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _type_name(value: Any) -> str:
    return {list: "a list", dict: "an object", str: "text", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _content_text(content: Any, where: str) -> str:
    """A message's content: text, or a list of parts that are all text (joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise DatasetRowError(f"{where}'s content is {_type_name(content)}, not text (only text messages can be run)")


def _messages(value: list, where: str) -> tuple[tuple[str, str], ...]:
    if not value:
        raise DatasetRowError(f"{where} is an empty list of messages")
    out = []
    for i, m in enumerate(value, start=1):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise DatasetRowError(f"{where}: message {i} is not a {{\"role\", \"content\"}} object")
        if m["role"] not in ROLES:
            raise DatasetRowError(f"{where}: message {i} has the role {m['role']!r} (expected one of "
                                  f"{', '.join(ROLES)})")
        out.append((m["role"], _content_text(m["content"], f"{where}: message {i}")))
    if out[-1][0] == "assistant":
        raise DatasetRowError(f"{where} ends with the assistant's message: a prompt ends where the model answers")
    if not any(role == "user" for role, _ in out):
        raise DatasetRowError(f"{where} has no user message")
    return tuple(out)


def _answer(value: Any, column: str, where: str) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value[0]  # verl's ground_truth may be a list of accepted answers; the reward gets the list as a column
    raise DatasetRowError(f"{where}: the answer in {column!r} is {_type_name(value)}, expected text or a number")


def json_value(value: Any, where: str) -> Any:
    """A column's value as JSON can hold it: dates as ISO text, decimals as floats, a non-finite float as null."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [json_value(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v, where) for k, v in value.items()}
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return json_value(float(value), where)
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise DatasetRowError(f"{where} holds bytes that are not UTF-8 text") from None
    raise DatasetRowError(f"{where} holds {type(value).__name__}, which a rollout set cannot keep")


class RowReader:
    """Turns rows into queries with the chosen (or the usual) prompt and answer columns."""

    def __init__(self, source: str, prompt_column: Optional[str] = None, answer_column: Optional[str] = None,
                 noun: str = "row", check_text: Optional[Callable[[str, str], None]] = None):
        self.source = source
        self.prompt_column = prompt_column
        self.answer_column = answer_column
        self.noun = noun
        self.check_text = check_text

    def query(self, row: Any, number: int) -> Query:
        where = f"{self.source}: {self.noun} {number}"
        try:
            return self._query(row, where)
        except DatasetRowError as exc:
            message = str(exc)
            raise DatasetRowError(message if message.startswith(where) else f"{where}: {message}") from None

    def _query(self, row: Any, where: str) -> Query:
        if not isinstance(row, dict):
            raise DatasetRowError(f"{where} is {_type_name(row)}, not an object with a prompt column")
        column, value = self._prompt(row, where)
        if isinstance(value, str):
            text, messages = value, ()
        elif isinstance(value, list):
            messages = _messages(value, f"{where}: {column!r}")
            text = next(content for role, content in reversed(messages) if role == "user")
        else:
            raise DatasetRowError(f"{where}: {column!r} is {_type_name(value)}, expected text or a list of "
                                  "{\"role\", \"content\"} messages")
        if not text.strip():
            raise DatasetRowError(f"{where}: the prompt is empty")
        answer = self._reference(row, where)
        top = column.split(".")[0] if column not in row else column
        columns = tuple((str(k), json_value(v, f"{where}: column {k!r}")) for k, v in row.items()
                        if k != top and k != OWN_ANSWER)
        if self.check_text is not None:
            for role, content in messages or (("user", text),):
                self.check_text(content, f"{where}: the {role}'s message" if messages else f"{where}: the prompt")
            if answer is not None:
                self.check_text(answer, f"{where}: the answer")
        return Query(text, answer, columns, messages)

    def _prompt(self, row: dict, where: str) -> tuple[str, Any]:
        if self.prompt_column is not None:
            found, value = _lookup(row, self.prompt_column)
            if not found:
                raise DatasetRowError(f"{where} has no column {self.prompt_column!r} (--prompt-column)")
            return self.prompt_column, value
        for column in PROMPT_COLUMNS:
            if column in row:
                return column, row[column]
        names = ", ".join(repr(str(k)) for k in list(row)[:8]) or "none"
        raise DatasetRowError(f"{where} has no prompt column (looked for {', '.join(PROMPT_COLUMNS)}; its columns: "
                              f"{names}); choose one with --prompt-column")

    def _reference(self, row: dict, where: str) -> Optional[str]:
        if self.answer_column is not None:
            found, value = _lookup(row, self.answer_column)
            if not found:
                raise DatasetRowError(f"{where} has no column {self.answer_column!r} (--answer-column)")
            return _answer(value, self.answer_column, where)
        for column in ANSWER_COLUMNS:
            found, value = _lookup(row, column)
            if found and value is not None:
                return _answer(value, column, where)
        return None


def parquet_rows(path, handle) -> Iterator[dict]:
    """The rows of a Parquet file (an open binary handle), a batch at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(handle)
        for batch in reader.iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetRowError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None


def jsonl_rows(text: str, source: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of JSON Lines text; a line that is not JSON is an error naming
    it."""
    import json

    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetRowError(f"{source}: line {number} is not valid JSON ({exc.msg} at column {exc.colno})") \
                from None


def looks_like_jsonl(text: str) -> bool:
    """Every non-blank line is a JSON object (and there are at least one)."""
    import json

    seen = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("{"):
            return False
        try:
            if not isinstance(json.loads(stripped), dict):
                return False
        except json.JSONDecodeError:
            return False
        seen = True
    return seen


def queries_from_rows(rows: Iterable[tuple[int, Any]], reader: RowReader) -> list[Query]:
    return [reader.query(row, number) for number, row in rows]
