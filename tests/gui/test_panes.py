"""Rollout panes fed by a Session that receives hand-made engine events."""

import math

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QTextCursor

from explorer.core.session import Session
from explorer.core.types import (
    Rollout,
    RolloutHeader,
    RunFinished,
    RunStarted,
    SamplingParams,
    Timings,
    TokenInfo,
)
from explorer.gui.panes.panes import RolloutPanes
from gui_kit import show
from kit import rollout_finished, run_started, sampled_tok, token_batch


@pytest.fixture
def panes(qtbot):
    return show(qtbot, RolloutPanes(), 1000, 400)


def stream(session, panes, k, words):
    """Feed the words to every rollout (rollout i gets word + str(i)), refreshing after each step."""
    for step, word in enumerate(words):
        session.add(token_batch(step, {i: (sampled_tok(step, f"{word}{i}", 0.9 - 0.1 * i), f"{word}{i}") for i in range(k)}))
        panes.refresh()


def test_streaming_appends_text_to_each_pane_and_never_rewrites_it(panes):
    session = Session()
    session.add(run_started(3))
    panes.show_group(session, "q0")
    assert [p.rollout_id for p in panes.panes()] == ["q0.r0", "q0.r1", "q0.r2"]
    removed = []
    for pane in panes.panes():
        pane.view.document().contentsChange.connect(lambda pos, rem, add: removed.append(rem))
    stream(session, panes, 3, ["The", " Pacific", " Ocean", ".\n", "Yes"])
    for pane in panes.panes():
        live = session.live_rollouts("q0")[pane.index]
        assert pane.text() == "".join(live.deltas) == f"The{pane.index} Pacific{pane.index} Ocean{pane.index}" \
            f".\n{pane.index}Yes{pane.index}"
        assert "streaming" in pane.title.text()
    assert removed and not any(removed)  # appended only


def test_finished_rollout_header_shows_reason_logprob_probability_and_reward(panes):
    session = Session()
    session.add(run_started(2))
    panes.show_group(session, "q0")
    tokens = [sampled_tok(0, "Pac", 0.5), sampled_tok(1, "ific", 0.25)]
    session.add(token_batch(0, {0: (tokens[0], "Pac")}))
    panes.refresh()
    session.add(token_batch(1, {0: (tokens[1], "ific")}))
    session.add(rollout_finished(0, "Pacific", tokens, "length", reward=1.0, advantage=0.5))
    session.add(rollout_finished(1, "", [], "cancelled"))
    session.add(RunFinished(Timings()))
    panes.refresh()
    first, second = panes.panes()
    assert first.text() == "Pacific"
    assert "length" in first.title.text() and "2 tokens" in first.title.text() and "seed 10" in first.title.text()
    stats = first.stats.text().replace("&nbsp;", " ")
    assert f"log π {math.log(0.125):.3f}".replace("-", "\u2212") in stats
    assert "π(y|x) 0.125" in stats and "ppl 2.828" in stats
    assert "R 1" in stats and "A +0.5" in stats
    assert "cancelled" in second.title.text()


def test_probability_that_underflows_is_shown_as_a_power_of_ten(panes):
    session = Session()
    session.add(run_started(1))
    panes.show_group(session, "q0")
    tokens = [TokenInfo(i, "x", b"x", -250.0, None, 1.0, 9) for i in range(4)]  # pi = e^-1000
    session.add(rollout_finished(0, "xxxx", tokens))
    panes.refresh()
    assert "10<sup>\u2212434.3</sup>" in panes.panes()[0].stats.text()


def test_multibyte_character_split_across_two_tokens_renders_once_and_maps_to_the_second(panes):
    session = Session()
    session.add(run_started(1))
    panes.show_group(session, "q0")
    session.add(token_batch(0, {0: (sampled_tok(0, "caf"), "caf")}))
    session.add(token_batch(1, {0: (sampled_tok(1, b"\xc3"), "")}))  # first byte of é: the engine adds no text yet
    panes.refresh()
    session.add(token_batch(2, {0: (sampled_tok(2, b"\xa9"), "é")}))
    session.add(token_batch(3, {0: (sampled_tok(3, " bien"), " bien")}))
    panes.refresh()
    view = panes.panes()[0].view
    assert view.text() == "café bien"
    assert view.token_span(1) == (3, 3) and view.token_span(2) == (3, 4)
    assert view.token_at(view.token_rect(2).center()) == 2


def test_branch_prefix_text_covering_several_tokens(panes):
    session = Session()
    prefix = (sampled_tok(0, "The"), sampled_tok(1, " Pac"), sampled_tok(2, "ific"))
    session.add(run_started(1, prefixes={0: (prefix, "The Pacific")}))
    panes.show_group(session, "q0")
    session.add(token_batch(3, {0: (sampled_tok(3, " Ocean"), " Ocean")}))
    panes.refresh()
    view = panes.panes()[0].view
    assert view.text() == "The Pacific Ocean"
    assert view.token_count == 4 and view.token_span(2) == (7, 11) and view.token_span(3) == (11, 17)


def test_final_text_trimmed_at_a_stop_string_replaces_what_streamed(panes):
    session = Session()
    session.add(run_started(1))
    panes.show_group(session, "q0")
    tokens = [sampled_tok(0, "Pacific"), sampled_tok(1, "\n\n"), sampled_tok(2, "User")]
    for step, t in enumerate(tokens):
        session.add(token_batch(step, {0: (t, t.token)}))
        panes.refresh()
    session.add(rollout_finished(0, "Pacific", tokens, "stop_string"))
    panes.refresh()
    pane = panes.panes()[0]
    assert pane.text() == "Pacific" and "stop string" in pane.title.text()


def test_shading_switches_to_entropy(panes):
    session = Session()
    session.add(run_started(1))
    panes.show_group(session, "q0")
    session.add(token_batch(0, {0: (sampled_tok(0, "sure", prob=0.99, entropy=3.5), "sure")}))
    panes.refresh()
    view = panes.panes()[0].view
    cursor = QTextCursor(view.document())
    cursor.setPosition(2)
    before = cursor.charFormat().background().color().name()
    with_signal = []
    panes.options.changed.connect(with_signal.append)
    panes.shading_box.setCurrentIndex(panes.shading_box.findData("entropy"))  # the box edits the views' option
    cursor = QTextCursor(view.document())
    cursor.setPosition(2)
    after = cursor.charFormat().background().color().name()
    assert panes.options.shading == "entropy" and with_signal == ["shading"]
    assert view.mode == "entropy" and panes.legend.mode == "entropy"
    assert panes.shading_box.currentData() == "entropy"
    assert before != after
    with pytest.raises(ValueError):
        panes.options.set_shading("loudness")


def test_sort_orders_panes_by_logprob_reward_and_back_to_index(panes):
    session = Session()
    session.add(run_started(3))
    panes.show_group(session, "q0")
    probs = {0: 0.2, 1: 0.9, 2: 0.5}
    for i, p in probs.items():
        session.add(rollout_finished(i, "x", [sampled_tok(0, "x", p)], reward={0: 1.0, 1: None, 2: 0.0}[i]))
    panes.refresh()
    panes.set_sort("logprob")
    assert [p.index for p in panes.panes()] == [1, 2, 0]
    layout_order = [panes._row.itemAt(i).widget().index for i in range(panes._row.count())]
    assert layout_order == [1, 2, 0]  # what the user sees, not only the list
    panes.set_sort("reward")
    assert [p.index for p in panes.panes()] == [0, 2, 1]  # no reward goes last
    panes.set_sort("index")
    assert [p.index for p in panes.panes()] == [0, 1, 2]


def test_clicking_a_token_emits_rollout_id_and_position(panes, qtbot):
    session = Session()
    session.add(run_started(2))
    panes.show_group(session, "q0")
    stream(session, panes, 2, ["Alpha", " beta", " gamma"])
    view = panes.pane("q0.r1").view
    with qtbot.waitSignal(panes.token_clicked, timeout=2000) as blocker:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view.token_rect(1).center())
    assert blocker.args == ["q0.r1", 1]


def test_highlight_and_scroll_to_token_mark_the_pane_and_the_token(panes):
    session = Session()
    session.add(run_started(2))
    panes.show_group(session, "q0")
    stream(session, panes, 2, ["One", " two", " three"])
    panes.highlight_rollouts(["q0.r1"])
    assert panes.pane("q0.r1")._highlighted and not panes.pane("q0.r0")._highlighted
    panes.scroll_to_token("q0.r1", 2)
    view = panes.pane("q0.r1").view
    marks = view.extraSelections()
    assert len(marks) == 1 and marks[0].cursor.selectedText() == " three1"
    panes.scroll_to_token("q0.r9", 0)  # unknown ids are ignored


def test_many_rollouts_use_compact_panes_and_branches_join_live(panes):
    session = Session()
    session.add(run_started(10))
    panes.show_group(session, "q0")
    assert len(panes.panes()) == 10 and all(p.compact for p in panes.panes())
    panes.set_compact(False)
    assert not any(p.compact for p in panes.panes())
    panes.set_compact(None)  # automatic again
    assert all(p.compact for p in panes.panes())
    branch = RunStarted((), (RolloutHeader("q0", "q0.r10", 10, 20, "q0.r3", 1, (sampled_tok(0, "Hi"),), "Hi"),),
                        SamplingParams(), total_tokens=4, is_branch=True)
    session.add(branch)
    panes.refresh()
    new = panes.pane("q0.r10")
    assert new is not None and new.text() == "Hi" and "from r3 @1" in new.title.text()


def test_copy_button_copies_the_rollout_text(panes, qtbot):
    session = Session()
    session.add(run_started(1))
    panes.show_group(session, "q0")
    stream(session, panes, 1, ["Pacific", " Ocean"])
    qtbot.mouseClick(panes.panes()[0].copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == "Pacific0 Ocean0"


def test_clearing_the_group_shows_the_placeholder(panes):
    session = Session()
    session.add(run_started(2))
    panes.show_group(session, "q0")
    assert len(panes.panes()) == 2 and not panes.placeholder.isVisible()
    panes.show_group(session, None)
    assert panes.panes() == [] and panes.placeholder.isVisible()
    panes.refresh()  # nothing to do, no error


def test_end_of_generation_token_counts_but_adds_no_text(panes):
    session = Session()
    session.add(run_started(1))
    panes.show_group(session, "q0")
    tokens = [sampled_tok(0, "Pacific"), sampled_tok(1, " Ocean"), sampled_tok(2, "<|im_end|>", prob=0.95)]
    session.add(token_batch(0, {0: (tokens[0], "Pacific")}))
    panes.refresh()
    session.add(token_batch(1, {0: (tokens[1], " Ocean")}))
    session.add(token_batch(2, {0: (tokens[2], "")}))  # the engine adds no text for end-of-generation tokens
    panes.refresh()
    session.add(rollout_finished(0, "Pacific Ocean", tokens, "stop"))
    session.add(token_batch(3, {0: (sampled_tok(3, "late"), "late")}))  # after the finish: ignored by the session
    panes.refresh()
    pane = panes.panes()[0]
    assert pane.text() == "Pacific Ocean" and pane.view.token_count == 3
    assert pane.view.token_span(1) == (7, 13) and pane.view.token_span(2) == (13, 13)
    assert "3 tokens" in pane.title.text() and "stop" in pane.title.text()


def test_compact_headers_keep_seed_and_probability(panes):
    session = Session()
    session.add(run_started(10))
    panes.show_group(session, "q0")
    tokens = [sampled_tok(0, "Pac", 0.5), sampled_tok(1, "ific", 0.25)]
    session.add(token_batch(0, {0: (tokens[0], "Pac")}))
    session.add(token_batch(1, {0: (tokens[1], "ific")}))
    session.add(rollout_finished(0, "Pacific", tokens))
    panes.refresh()
    pane = panes.pane("q0.r0")
    assert pane.compact
    assert "s10" in pane.title.text()
    assert "π 0.125" in pane.stats.text().replace("&nbsp;", " ")


def test_show_only_makes_panes_for_the_chosen_rollouts(panes):
    session = Session()
    session.add(run_started(12))
    panes.show_group(session, "q0")
    panes.show_only(["q0.r3", "q0.r7"])
    assert [p.rollout_id for p in panes.panes()] == ["q0.r3", "q0.r7"]
    assert not panes.panes()[0].compact  # two panes have room
    panes.show_only([])
    assert panes.panes() == [] and "Select rows" in panes.placeholder.text()
    panes.show_only(None)
    assert len(panes.panes()) == 12


def test_a_pane_opens_at_the_start_of_its_text(panes):
    session = Session()
    session.add(run_started(1))
    panes.show_group(session, "q0")
    panes.resize(400, 200)
    stream(session, panes, 1, [f" word{i}\n" for i in range(80)])
    bar = panes.panes()[0].view.verticalScrollBar()
    assert bar.maximum() > 0 and bar.value() == 0


def test_token_menu_in_a_pane_asks_for_a_branch_of_that_rollout(panes):
    session = Session()
    session.add(run_started(2))
    panes.show_group(session, "q0")
    stream(session, panes, 2, ["The", " Pacific"])
    requests = []
    panes.branch_requested.connect(lambda *args: requests.append(args))
    menu = panes.pane("q0.r1").view.token_menu(1)
    next(a for a in menu.actions() if a.text().startswith("Resample")).trigger()
    assert requests == [("q0.r1", 1, None)]
