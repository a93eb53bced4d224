"""Query lists: a text file with one query a line, or a JSON list of strings or of {"query", "reference"} objects.

Shared by the CLI's --queries and the window's load/save of the query set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

from explorer.core.errors import ExplorerError
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


def parse_queries(text: str, source: str = "<text>", as_json: Optional[bool] = None) -> list[Query]:
    """Queries from a file's text: JSON when as_json (None: when it starts with '[' or '{' and parses as JSON),
    else one query per non-blank line."""
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    data = None
    if as_json is None and text.lstrip()[:1] in ("[", "{"):
        try:  # it looks like JSON; a text line that starts with '[' (e.g. "[Poem] ...") is still text
            data = json.loads(text)
            as_json = True
        except json.JSONDecodeError:
            as_json = False
    if as_json:
        if data is None:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise QueryFileError(f"{source}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(data, list):
            raise QueryFileError(f"{source}: a JSON query list must be a list of strings or of {{\"query\", "
                                 "\"reference\"} objects")
        queries = []
        for i, item in enumerate(data):
            if isinstance(item, str):
                queries.append(Query(item))
            elif isinstance(item, dict) and isinstance(item.get("query"), str):
                reference = item.get("reference")
                if reference is not None and not isinstance(reference, str):
                    raise QueryFileError(f"{source}: item {i + 1}: \"reference\" must be a string")
                queries.append(Query(item["query"], reference))
            else:
                raise QueryFileError(f"{source}: item {i + 1} is neither a string nor an object with a \"query\" "
                                     "string")
    else:
        queries = [Query(line.strip()) for line in text.splitlines() if line.strip()]
    queries = [q for q in queries if q.text.strip()]
    for i, q in enumerate(queries):
        check_text(q.text, f"{source}: query {i + 1}")
        if q.reference_answer is not None:
            check_text(q.reference_answer, f"{source}: the reference answer of query {i + 1}")
    if not queries:
        raise QueryFileError(f"{source}: no queries in the file")
    return queries


def read_query_file(path: str | Path) -> list[Query]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise QueryFileError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise QueryFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    suffix = Path(path).suffix.lower()
    return parse_queries(text, str(path), True if suffix == ".json" else False if suffix == ".txt" else None)


def format_queries(queries: Iterable[Query], as_json: bool) -> str:
    queries = list(queries)
    if as_json or any(q.reference_answer is not None or "\n" in q.text for q in queries):
        items = [q.text if q.reference_answer is None else {"query": q.text, "reference": q.reference_answer} for q in queries]
        return json.dumps(items, indent=2, ensure_ascii=False) + "\n"
    return "".join(q.text + "\n" for q in queries)


def write_query_file(path: str | Path, queries: Iterable[Query]) -> None:
    path = Path(path)
    try:
        path.write_text(format_queries(queries, path.suffix.lower() == ".json"), encoding="utf-8")
    except OSError as exc:
        raise QueryFileError(f"{path}: cannot write ({exc.strerror or exc})") from None
