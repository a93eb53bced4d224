"""Query lists as the CLI's --queries and the window's Load... read them."""

from __future__ import annotations

import json

import pytest

from explorer.core.files.queries import QueryFileError, read_query_file
from explorer.core.types import Query


def test_text_file_lines_that_start_like_json_stay_text(tmp_path):
    path = tmp_path / "q.lst"
    path.write_text("[Poem] Write a haiku\n\n{Story} about the sea\n")
    assert read_query_file(path) == [Query("[Poem] Write a haiku"), Query("{Story} about the sea")]
    txt = tmp_path / "q.txt"
    txt.write_text('["this is", "one line of text"]\n')
    assert read_query_file(txt) == [Query('["this is", "one line of text"]')]


def test_json_list_with_references_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "q.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(["a", {"query": "b", "reference": "B"}]).encode())
    assert read_query_file(path) == [Query("a"), Query("b", "B")]
    txt = tmp_path / "bom.txt"
    txt.write_bytes(b"\xef\xbb\xbfWhich is the largest ocean?\n")
    assert read_query_file(txt) == [Query("Which is the largest ocean?")]


@pytest.mark.parametrize("content, needle", [
    ("[1, 2", "not valid JSON"),
    ('"a"', "must be a list"),
    ('{"text": "a"}', "line 1 has no prompt column"),
    ('[{"text": "a"}]', "item 1"),
    ("[]", "no queries"),
])
def test_bad_json_query_files_say_what_is_wrong(tmp_path, content, needle):
    path = tmp_path / "q.json"
    path.write_text(content)
    with pytest.raises(QueryFileError, match=needle):
        read_query_file(path)
