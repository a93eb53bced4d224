"""Query lists and datasets: a text file with one query a line, a JSON list of strings or of rows ({"query",
"reference"} objects, or a dataset's rows), JSON Lines, or Parquet (rows: core/files/datasets.py).

Shared by the CLI's --queries and the window's load/save of the query set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

from explorer.core.errors import ExplorerError, RolloutFileError
from explorer.core.files.datasets import (
    DatasetRowError, RowReader, jsonl_rows, looks_like_jsonl, parquet_rows, queries_from_rows,
)
from explorer.core.files.set_text import open_regular
from explorer.core.types import Query

SEED_QUERIES = ("Which is the largest ocean?", "Can you give me some python code?")


class QueryFileError(ExplorerError):
    """A query list that cannot be read."""


def check_text(text: str, what: str) -> None:
    """Refuse text that cannot be written as UTF-8: a lone surrogate comes from bytes that were not UTF-8 (a
    terminal in another encoding, a JSON "\\ud800" escape) and would fail the tokenizer and every file written."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise QueryFileError(f"{what} is not valid text: a lone surrogate U+{ord(text[e.start]):04X} at character "
                             f"{e.start} (bytes that are not UTF-8; check the terminal's or the file's encoding)") \
            from None


TEXT, JSON, JSONL, PARQUET = "text", "json", "jsonl", "parquet"
_KINDS = {".txt": TEXT, ".json": JSON, ".jsonl": JSONL, ".ndjson": JSONL, ".parquet": PARQUET}


def parse_queries(text: str, source: str = "<text>", kind: Optional[str] = None, prompt_column: Optional[str] = None,
                  answer_column: Optional[str] = None) -> list[Query]:
    """Queries from a file's text. kind: TEXT (one query per non-blank line), JSON (a list of strings or of dataset
    rows, core/files/datasets.py), JSONL (one row a line), or None: JSON when the text parses as JSON, JSONL when every
    line is a JSON object, else text. A JSON file that does not parse but is JSON Lines is read as JSONL (`datasets`
    writes JSON Lines to a .json name)."""
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    data = None
    head = text.lstrip()[:1]
    if kind is None and head in ("[", "{"):
        try:  # it looks like JSON; a text line that starts with '[' (e.g. "[Poem] ...") is still text
            data = json.loads(text)
            kind = JSON
        except json.JSONDecodeError:
            kind = JSONL if looks_like_jsonl(text) else TEXT
    if kind == JSON and data is None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if not looks_like_jsonl(text):
                raise QueryFileError(f"{source}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
            kind = JSONL
    if kind == JSON and isinstance(data, dict):
        kind = JSONL  # one object: a dataset of one row (JSON Lines of one line)
    if kind in (None, TEXT):
        if prompt_column is not None or answer_column is not None:
            raise QueryFileError(f"{source}: --prompt-column and --answer-column choose columns of a JSON, JSONL or "
                                 "Parquet dataset; this is a text file, one query a line")
        queries = [Query(line.strip()) for line in text.splitlines() if line.strip()]
    elif kind == JSONL:
        reader = RowReader(source, prompt_column, answer_column, "line", check_text)
        queries = _checked(lambda: queries_from_rows(jsonl_rows(text, source), reader))
    else:
        queries = _json_queries(data, source, prompt_column, answer_column)
    return _finished(queries, source)


def _json_queries(data, source: str, prompt_column: Optional[str], answer_column: Optional[str]) -> list[Query]:
    if not isinstance(data, list):
        raise QueryFileError(f"{source}: a JSON query list must be a list of strings or of objects with a prompt "
                             "(\"prompt\", \"query\", ...; JSON Lines, one object a line, works too)")
    reader = RowReader(source, prompt_column, answer_column, "item", check_text)
    queries = []
    for i, item in enumerate(data, start=1):
        if isinstance(item, str):
            queries.append(Query(item))
        elif isinstance(item, dict):
            queries.append(_checked(lambda: reader.query(item, i)))
        else:
            raise QueryFileError(f"{source}: item {i} is neither a string nor an object with a prompt")
    return queries


def _checked(build):
    try:
        return build()
    except DatasetRowError as exc:
        raise QueryFileError(str(exc)) from None


def _finished(queries: list[Query], source: str) -> list[Query]:
    """Blank queries dropped, the text checked; none at all is an error."""
    queries = [q for q in queries if q.text.strip()]
    for i, q in enumerate(queries):
        check_text(q.text, f"{source}: query {i + 1}")
        if q.reference_answer is not None:
            check_text(q.reference_answer, f"{source}: the reference answer of query {i + 1}")
    if not queries:
        raise QueryFileError(f"{source}: no queries in the file")
    return queries


def read_query_file(path: str | Path, prompt_column: Optional[str] = None,
                    answer_column: Optional[str] = None) -> list[Query]:
    """The queries of a text, JSON, JSONL or Parquet file (by its suffix; another suffix is told by its content).
    QueryFileError names the file, and the row, of what is wrong."""
    kind = _KINDS.get(Path(path).suffix.lower())
    if kind == PARQUET:
        return _finished(_parquet_queries(path, prompt_column, answer_column), str(path))
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise QueryFileError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise QueryFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_queries(text, str(path), kind, prompt_column, answer_column)


def _parquet_queries(path, prompt_column: Optional[str], answer_column: Optional[str]) -> list[Query]:
    try:
        handle, _size = open_regular(path)
    except RolloutFileError as exc:
        raise QueryFileError(str(exc)) from None
    reader = RowReader(str(path), prompt_column, answer_column, "row", check_text)
    with handle:
        return _checked(lambda: queries_from_rows(enumerate(parquet_rows(path, handle), start=1), reader))


def _json_item(q: Query):
    """A query as a JSON list item: a string, {"query", "reference"}, or a dataset's row (its columns, the prompt as
    the dataset gave it, and the reference answer as it is now)."""
    if not q.messages and not q.columns:
        return q.text if q.reference_answer is None else {"query": q.text, "reference": q.reference_answer}
    item = dict(q.columns)
    item["prompt"] = [{"role": role, "content": content} for role, content in q.messages] if q.messages else q.text
    if q.reference_answer is not None:
        item["reference"] = q.reference_answer  # read back first of the answer columns (datasets.ANSWER_COLUMNS)
    return item


def format_queries(queries: Iterable[Query], as_json: bool) -> str:
    queries = list(queries)
    if as_json or any(q.reference_answer is not None or q.messages or q.columns or "\n" in q.text for q in queries):
        return json.dumps([_json_item(q) for q in queries], indent=2, ensure_ascii=False) + "\n"
    return "".join(q.text + "\n" for q in queries)


def write_query_file(path: str | Path, queries: Iterable[Query]) -> None:
    path = Path(path)
    try:
        path.write_text(format_queries(queries, path.suffix.lower() == ".json"), encoding="utf-8")
    except OSError as exc:
        raise QueryFileError(f"{path}: cannot write ({exc.strerror or exc})") from None
