"""Datasets as people have them: TRL's and verl's rows in JSONL, JSON and Parquet, read into queries; a conversation
becomes the chat prompt."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_engine import FakeEngine

from explorer.core.engine.plan import chat_messages, raw_prompt
from explorer.core.files.queries import QueryFileError, format_queries, read_query_file
from explorer.core.types import Query, SamplingParams

SYSTEM = {"role": "system", "content": "Answer in one word."}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_trl_standard_and_conversational_prompts_with_their_answers(tmp_path):
    path = _jsonl(tmp_path / "trl.jsonl", [
        {"prompt": "What is 2 + 2?", "solution": "4", "level": 1},
        {"prompt": [SYSTEM, {"role": "user", "content": "Capital of France?"}], "answer": "Paris"},
        {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Largest ocean?"}], "ground_truth": "Pacific"},
        {"prompt": "No answer here"},
    ])
    a, b, c, d = read_query_file(path)
    assert a == Query("What is 2 + 2?", "4", (("solution", "4"), ("level", 1)))
    assert b.text == "Capital of France?" and b.reference_answer == "Paris"
    assert b.messages == (("system", "Answer in one word."), ("user", "Capital of France?"))
    assert b.columns == (("answer", "Paris"),)
    assert c.text == "Largest ocean?" and len(c.messages) == 3 and c.reference_answer == "Pacific"
    assert d.reference_answer is None and d.columns == ()


def test_verl_parquet_with_reward_model_ground_truth(tmp_path):
    rows = [
        {"data_source": "gsm8k", "prompt": [{"role": "user", "content": "2 + 3?"}], "ability": "math",
         "reward_model": {"style": "rule", "ground_truth": "5"}, "extra_info": {"index": 0, "split": "train"}},
        {"data_source": "gsm8k", "prompt": [{"role": "user", "content": "10 / 2?"}], "ability": "math",
         "reward_model": {"style": "rule", "ground_truth": "5"}, "extra_info": {"index": 1, "split": "train"}},
    ]
    path = tmp_path / "verl.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    first, second = read_query_file(path)
    assert first.text == "2 + 3?" and first.reference_answer == "5"
    assert dict(first.columns)["reward_model"] == {"style": "rule", "ground_truth": "5"}
    assert dict(first.columns)["extra_info"] == {"index": 0, "split": "train"}
    assert [name for name, _ in first.columns] == ["data_source", "ability", "reward_model", "extra_info"]
    assert second.messages == (("user", "10 / 2?"),)


def test_a_list_ground_truth_and_a_number_answer(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "reward_model": {"ground_truth": ["72", "seventy-two"]}},
                                         {"question": "b", "answer": 42}])
    first, second = read_query_file(path)
    assert first.reference_answer == "72"  # the reward gets the whole list through the reward_model column
    assert second.text == "b" and second.reference_answer == "42"


def test_the_columns_can_be_chosen(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"instruction": "Say hi", "meta": {"expected": "hi"}, "answer": "no"}])
    (q,) = read_query_file(path, prompt_column="instruction", answer_column="meta.expected")
    assert q.text == "Say hi" and q.reference_answer == "hi"
    assert dict(q.columns) == {"meta": {"expected": "hi"}, "answer": "no"}
    with pytest.raises(QueryFileError, match=r"d\.jsonl: line 1 has no column 'input' \(--prompt-column\)"):
        read_query_file(path, prompt_column="input")
    text = tmp_path / "q.txt"
    text.write_text("one\n")
    with pytest.raises(QueryFileError, match="this is a text file"):
        read_query_file(text, prompt_column="prompt")


@pytest.mark.parametrize("rows, needle", [
    ([{"prompt": "ok"}, {"text": "no prompt"}], r"line 2 has no prompt column \(looked for prompt, query"),
    ([{"prompt": 3}], r"line 1: 'prompt' is a number, expected text or a list"),
    ([{"prompt": [{"role": "user"}]}], r"line 1: 'prompt': message 1 is not a"),
    ([{"prompt": [{"role": "wizard", "content": "x"}]}], r"line 1: 'prompt': message 1 has the role 'wizard'"),
    ([{"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
     r"line 1: 'prompt' ends with the assistant's message"),
    ([{"prompt": [SYSTEM]}], r"line 1: 'prompt' has no user message"),
    ([{"prompt": [{"role": "user", "content": [{"type": "image"}]}]}], r"message 1's content is a list, not text"),
    ([{"prompt": "   "}], r"line 1: the prompt is empty"),
    ([{"prompt": "q", "answer": {"a": 1}}], r"line 1: the answer in 'answer' is an object"),
    (["plain string"], r"line 1 is text, not an object"),
])
def test_a_bad_row_is_one_line_naming_it(tmp_path, rows, needle):
    path = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(QueryFileError, match=needle) as info:
        read_query_file(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(path))


def test_a_line_that_is_not_json_is_named_and_blank_lines_count(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b"\n')
    with pytest.raises(QueryFileError, match=r"bad\.jsonl: line 3 is not valid JSON"):
        read_query_file(path)


def test_a_bad_parquet_row_and_a_file_that_is_not_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "a"}, {"prompt": None}]), path)
    with pytest.raises(QueryFileError, match=r"d\.parquet: row 2: 'prompt' is null"):
        read_query_file(path)
    fake = tmp_path / "not.parquet"
    fake.write_text('{"prompt": "a"}\n')
    with pytest.raises(QueryFileError, match=r"not\.parquet: not a readable Parquet file"):
        read_query_file(fake)


def test_todays_formats_still_read_and_a_json_named_jsonl_file(tmp_path):
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(["a", {"query": "b", "reference": "B"}, {"prompt": "c", "answer": "C"}]))
    assert [(q.text, q.reference_answer) for q in read_query_file(listed)] == [("a", None), ("b", "B"), ("c", "C")]
    # datasets' to_json writes JSON Lines, whatever the name
    lines = _jsonl(tmp_path / "rows.json", [{"prompt": "x", "answer": "1"}, {"prompt": "y", "answer": "2"}])
    assert [q.reference_answer for q in read_query_file(lines)] == ["1", "2"]
    sniffed = _jsonl(tmp_path / "rows.data", [{"prompt": "x"}])
    assert read_query_file(sniffed)[0].text == "x"
    with pytest.raises(QueryFileError, match=r"list2\.json: item 2: 'prompt' is a number"):
        listed2 = tmp_path / "list2.json"
        listed2.write_text(json.dumps(["a", {"prompt": 1}]))
        read_query_file(listed2)


def test_a_saved_dataset_reads_back_the_same(tmp_path):
    rows = [{"prompt": [SYSTEM, {"role": "user", "content": "Q?"}], "answer": "A", "topic": "t"},
            {"prompt": "plain", "solution": "S"}]
    queries = read_query_file(_jsonl(tmp_path / "d.jsonl", rows))
    edited = [queries[0], Query(queries[1].text, "S2", queries[1].columns)]
    saved = tmp_path / "saved.json"
    saved.write_text(format_queries(edited, True))
    again = read_query_file(saved)
    assert again[0].messages == queries[0].messages and again[0].reference_answer == "A"
    assert again[1].reference_answer == "S2"  # the answer as edited wins over the dataset's column
    assert dict(again[1].columns)["solution"] == "S"


def test_a_conversation_is_the_chat_prompt_its_system_message_first():
    messages = (("system", "Be brief."), ("user", "Q?"))
    assert chat_messages("Q?", "Other.", messages) == [{"role": "system", "content": "Be brief."},
                                                       {"role": "user", "content": "Q?"}]
    assert chat_messages("Q?", "Other.", (("user", "Q?"),))[0] == {"role": "system", "content": "Other."}
    assert chat_messages("Q?", None, ()) == [{"role": "user", "content": "Q?"}]
    assert raw_prompt("Q?", None, messages) == "Be brief.\n\nQ?"
    assert raw_prompt("Q?", "S", ()) == "S\n\nQ?"

    engine = FakeEngine("fake:m")
    events = list(engine.generate([Query("Q?", messages=messages)], 1, SamplingParams(max_tokens=2),
                                  system="Other."))
    (header,) = events[0].groups
    assert header.prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ?")
    assert header.messages == messages and header.query == "Q?"


def test_a_rows_conversation_and_columns_persist_in_the_set_and_the_journal(tmp_path):
    from explorer.core.files import export
    from explorer.core.files.journal import JournalWriter, read_journal
    from explorer.core.session import Session

    engine = FakeEngine("fake:m")
    row = Query("Q?", "A", (("topic", "t"), ("meta", {"n": [1, 2]})), (("system", "Be brief."), ("user", "Q?")))
    events = list(engine.generate([row], 2, SamplingParams(max_tokens=3)))
    session = Session(engine.info, SamplingParams(max_tokens=3)).extend(events)
    group = session.group("q0")
    assert group.messages == row.messages and group.columns == row.columns

    path = tmp_path / "set.json"
    export.save(session.rollout_set(), path)
    on_disk = export.to_dict(export.load(path))["groups"][0]
    assert on_disk["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}]
    assert on_disk["columns"] == {"topic": "t", "meta": {"n": [1, 2]}}
    again = export.load(path).groups[0]
    assert (again.messages, again.columns, again.reference_answer) == (row.messages, row.columns, "A")

    journal = JournalWriter(tmp_path / "run.journal")
    journal.begin(export.loads(export.dumps(export.RolloutSet(engine.info, SamplingParams(), ()))))
    journal.append(events)
    journal.close()
    recovered = read_journal(tmp_path / "run.journal").groups[0]
    assert (recovered.messages, recovered.columns) == (row.messages, row.columns)


def test_a_plain_group_is_written_as_before(tmp_path):
    from explorer.core.files import export

    engine = FakeEngine("fake:m")
    events = list(engine.generate(["plain"], 1, SamplingParams(max_tokens=2)))
    from explorer.core.session import Session

    d = export.to_dict(Session(engine.info, SamplingParams(max_tokens=2)).extend(events).rollout_set())["groups"][0]
    assert "messages" not in d and "columns" not in d
