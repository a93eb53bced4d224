"""The rollout-set loader against a corpus of broken files generated here: every truncation at a structural
boundary, wrong types at every field, out-of-range numbers, huge and deeply nested arrays, non-UTF-8, empty files,
directories, FIFOs, unreadable files. Each is refused with one line (a RolloutFileError), never another exception,
never a hang; numbers out of range name their JSON path."""

from __future__ import annotations

import copy
import json
import os
import stat
import threading

import pytest
from as_nobody import outcome_as_nobody
from synthetic import synthetic_set

from explorer.core.files import export
from explorer.core.files import set_text
from explorer.core.errors import LoadCancelled, RolloutFileError


def refusal(path) -> str:
    with pytest.raises(RolloutFileError) as info:
        export.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def write(tmp_path, text: str | bytes, name: str = "bad.json"):
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


# -- truncations ----------------------------------------------------------------------------------------------------


def _boundaries(text: str) -> list[int]:
    """Offsets just before and after every structural character outside strings, and inside a few strings."""
    out, in_string, escaped = set(), False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                out.update((i, i + 1))
            continue
        if ch == '"':
            in_string = True
            out.update((i, i + 1, i + 2))
        elif ch in "{}[],:":
            out.update((i, i + 1))
    return sorted(o for o in out if 0 <= o < len(text))


def test_every_truncation_at_a_structural_boundary_is_refused(tmp_path, small_set_path):
    text = small_set_path.read_text(encoding="utf-8").rstrip("\n")
    cuts = _boundaries(text)
    assert len(cuts) > 500  # the corpus really covers the file
    path = tmp_path / "cut.json"
    messages = set()
    for cut in cuts:
        path.write_text(text[:cut], encoding="utf-8")
        message = refusal(path)
        messages.add(message.split(":")[1].strip() if cut else message)
    assert any("malformed JSON" in m for m in messages) and any("empty" in m for m in messages)


def test_a_whole_file_cut_in_the_middle_of_a_multibyte_character(tmp_path, small_set_path):
    data = small_set_path.read_bytes()
    at = data.index("é".encode()) + 1  # the synthetic words include "café"
    message = refusal(write(tmp_path, data[:at]))
    assert "not UTF-8" in message or "malformed JSON" in message


# -- wrong types, at every field ------------------------------------------------------------------------------------


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value[:2]):  # two items of each array are enough to reach every field
            yield from _paths(child, prefix + (index,))


def _replaced(d, path, new):
    d = copy.deepcopy(d)
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return d


WRONG = ["text", 12345, -1, 1.5, True, None, [], {}, [1, "a"], {"x": 1}]


@pytest.mark.slow
def test_a_wrong_type_at_any_field_loads_or_is_refused_never_crashes(tmp_path, small_set_path):
    good = json.loads(small_set_path.read_text(encoding="utf-8"))
    path = tmp_path / "typed.json"
    refused = loaded = 0
    for field_path in _paths(good):
        if not field_path:
            continue
        for new in WRONG:
            path.write_text(json.dumps(_replaced(good, field_path, new)), encoding="utf-8")
            try:
                export.load(path)
                loaded += 1
            except RolloutFileError as exc:
                assert "\n" not in str(exc)
                refused += 1
    assert refused > 1000 and loaded > 0  # optional fields take some of the values (null, text...)


# -- numbers out of range -------------------------------------------------------------------------------------------

G, R, T = "$.groups[0]", "$.groups[0].rollouts[0]", "$.groups[0].rollouts[0].tokens[0]"
OUT_OF_RANGE = [
    (("groups", 0, "rollouts", 0, "tokens", 0, "rank"), 2**40, f"{T}.rank"),
    (("groups", 0, "rollouts", 0, "tokens", 0, "rank"), 0, f"{T}.rank"),
    (("groups", 0, "rollouts", 0, "tokens", 0, "id"), 2**40, f"{T}.id"),
    (("groups", 0, "rollouts", 0, "tokens", 0, "id"), -1, f"{T}.id"),
    (("groups", 0, "rollouts", 0, "tokens", 0, "top_logprobs", 0, "id"), 2**31, f"{T}.top_logprobs[0].id"),
    (("groups", 0, "rollouts", 0, "tokens", 0, "logprob"), 5.0, f"{T}.logprob"),
    (("groups", 0, "rollouts", 0, "tokens", 0, "logprob"), 10**400, f"{T}.logprob"),
    (("groups", 0, "rollouts", 0, "tokens", 0, "entropy"), -1.0, f"{T}.entropy"),
    (("groups", 0, "rollouts", 0, "tokens", 0, "bytes"), [300], f"{T}.bytes[0]"),
    (("groups", 0, "rollouts", 0, "index"), 2**40, f"{R}.index"),
    (("groups", 0, "rollouts", 0, "seed"), -5, f"{R}.seed"),
    (("groups", 0, "rollouts", 0, "seed"), 2**64, f"{R}.seed"),
    (("groups", 0, "rollouts", 0, "branch_position"), 2**40, f"{R}.branch_position"),
    (("groups", 0, "rollouts", 0, "reward"), 10**400, f"{R}.reward"),
    (("groups", 0, "rollouts", 0, "token_ids"), [2**40, 1, 2], f"{R}.token_ids[0]"),
    (("groups", 0, "prompt_token_ids"), [1, -2], f"{G}.prompt_token_ids[1]"),
    (("sampling", "max_tokens"), 2**40, "$.sampling.max_tokens"),
    (("sampling", "top_k"), 2**40, "$.sampling.top_k"),
    (("sampling", "temperature"), 10**400, "$.sampling.temperature"),
    (("sampling", "seed"), -1, "$.sampling.seed"),
    (("model", "n_vocab"), 2**60, "$.model.n_vocab"),
    (("model", "file_size"), -1, "$.model.file_size"),
    (("timings", "load_s"), 10**400, "$.timings.load_s"),
]


@pytest.mark.parametrize("field_path, value, where", OUT_OF_RANGE, ids=[w for _, _, w in OUT_OF_RANGE])
def test_a_number_out_of_range_is_refused_with_its_json_path(tmp_path, small_set_path, field_path, value, where):
    good = json.loads(small_set_path.read_text(encoding="utf-8"))
    if field_path[-1] == "token_ids":
        value = value[:1] + good["groups"][0]["rollouts"][0]["token_ids"][1:]
    path = write(tmp_path, json.dumps(_replaced(good, field_path, value)))
    assert f"at {where}:" in refusal(path)


def test_an_overflowing_float_literal_is_refused_not_read_as_infinity(tmp_path, small_set_path):
    text = small_set_path.read_text(encoding="utf-8")
    # json reads 1e999 as float('inf'): the schema's finite bounds must catch it
    text = text.replace('"entropy":', '"entropy":1e999,"was_entropy":', 1)
    assert "entropy" in refusal(write(tmp_path, text))


# -- huge and nested ------------------------------------------------------------------------------------------------


def test_deep_nesting_is_refused_without_a_recursion_crash(tmp_path):
    message = refusal(write(tmp_path, '{"format": ' + "[" * 200_000 + "]" * 200_000 + "}"))
    assert "nested too deeply" in message


def test_deep_nesting_inside_a_rollout(tmp_path, small_set_path):
    text = small_set_path.read_text(encoding="utf-8")
    text = text.replace('"reward_error":null', '"reward_error":' + "[" * 100_000 + "]" * 100_000, 1)
    assert "nested too deeply" in refusal(write(tmp_path, text))


@pytest.mark.slow
def test_a_huge_array_where_a_short_one_belongs(tmp_path, small_set_path):
    good = json.loads(small_set_path.read_text(encoding="utf-8"))
    bad = _replaced(good, ("groups", 0, "rollouts", 0, "tokens", 0, "bytes"), [7] * 300_000 + ["x"])
    assert "bytes[300000]" in refusal(write(tmp_path, json.dumps(bad)))


def test_a_string_longer_than_the_read_window(tmp_path, small_set_path):
    good = json.loads(small_set_path.read_text(encoding="utf-8"))
    long_text = "ü" * (3 * set_text.READ_CHUNK)  # crosses several chunk edges, as multi-byte UTF-8
    d = _replaced(good, ("groups", 0, "query"), long_text)
    rs = export.load(write(tmp_path, json.dumps(d, ensure_ascii=False)))
    assert rs.groups[0].query == long_text


# -- not text, not a file -------------------------------------------------------------------------------------------


def test_non_utf8_names_the_byte_and_its_offset_past_the_first_chunk(tmp_path, small_set_path):
    data = small_set_path.read_bytes()
    padded = data[:1] + b" " * (set_text.READ_CHUNK + 10) + data[1:]
    at = padded.index(b'"query ') + 3
    message = refusal(write(tmp_path, padded[:at] + b"\xff" + padded[at + 1:]))
    assert message.endswith(f"not UTF-8 text (byte 0xff at offset {at})")


@pytest.mark.parametrize("text", ["", " \n\t", "\ufeff"])
def test_empty_files(tmp_path, text):
    assert "is empty" in refusal(write(tmp_path, text))


def test_a_directory(tmp_path):
    assert refusal(tmp_path).endswith("it is a directory, not a rollout-set file")


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(refusal(fifo)), daemon=True)
    reader.start()
    reader.join(timeout=30)
    if reader.is_alive():  # unblock the reader so the test run does not hang with it
        with open(fifo, "w"):
            pass
        pytest.fail("loading a FIFO blocked waiting for a writer")
    assert outcome[0].endswith("it is a named pipe (FIFO), not a regular file")


def test_a_device_is_refused(tmp_path):
    if not os.path.exists(os.devnull) or not stat.S_ISCHR(os.stat(os.devnull).st_mode):
        pytest.skip("no character device to try")
    assert refusal(os.devnull).endswith("it is a device, not a regular file")


def test_permission_denied(small_set_path, locked_copy):
    locked = locked_copy(small_set_path, "locked.json")
    assert outcome_as_nobody(lambda: export.load(locked)) == f"cannot read {locked}: Permission denied"


# -- the streaming reader's own promises ----------------------------------------------------------------------------


def test_progress_reaches_the_file_size_and_cancel_stops_the_read(tmp_path):
    path = tmp_path / "large.json"
    export.save(synthetic_set(4, 8, 200), path)
    size = path.stat().st_size
    assert size > 3 * set_text.READ_CHUNK
    seen = []
    rs = export.load(path, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (size, size) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(rs.groups) == 4 and all(len(g.rollouts) == 8 for g in rs.groups)

    cancel = threading.Event()

    def cancel_after_first_chunk(done, total):
        cancel.set()

    with pytest.raises(LoadCancelled):
        export.load(path, progress=cancel_after_first_chunk, cancel=cancel)


def test_streamed_load_equals_a_whole_parse(tmp_path):
    path = tmp_path / "large.json"
    original = synthetic_set(3, 5, 120)
    export.save(original, path)
    assert export.load(path) == original == export.loads(path.read_text(encoding="utf-8"))


def test_groups_before_format_still_read(tmp_path, small_set_path):
    d = json.loads(small_set_path.read_text(encoding="utf-8"))
    reordered = {"groups": d.pop("groups"), **d}
    assert export.load(write(tmp_path, json.dumps(reordered))) == export.load(small_set_path)


def test_another_json_file_is_refused_before_its_groups_are_read(tmp_path):
    text = '{"format": "someone/else", "version": 1, "groups": [' + ",".join(["{}"] * 1000) + "]}"
    assert "its format is 'someone/else'" in refusal(write(tmp_path, text))


def test_trailing_data_after_the_set(tmp_path, small_set_path):
    text = small_set_path.read_text(encoding="utf-8") + "{}"
    assert "Extra data" in refusal(write(tmp_path, text))
