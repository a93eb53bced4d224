"""Scoring panel: candidates in, score_requested out; scores shown with log pi, pi, share, perplexity, shading."""

import math

import pytest
from PySide6.QtCore import Qt

from explorer.core.types import Score, TokenInfo
from gui_kit import show
from kit import tok
from explorer.gui.views.scoring import OCEAN_QUERY, RESPONSE_MIN_WIDTH, ScoringPanel, candidate_lines, shares
from explorer.gui.widgets.tokens import TokenTextView


@pytest.fixture
def panel(qtbot):
    return show(qtbot, ScoringPanel(), 700, 300)


def test_the_ocean_query_comes_with_the_two_candidates_and_drafts_survive_switching(panel):
    panel.set_group("q0", OCEAN_QUERY)
    assert candidate_lines(panel.candidates.toPlainText()) == ["Atlantic Ocean", "Pacific Ocean"]
    assert "Which is the largest ocean?" in panel.query_label.text()
    panel.set_group("q1", "Can you give me some python code?")
    assert panel.candidates.toPlainText() == ""
    panel.candidates.setPlainText("print('hi')")
    panel.set_group("q0", OCEAN_QUERY)
    panel.candidates.setPlainText("Indian Ocean")
    panel.set_group("q1", "Can you give me some python code?")
    assert panel.candidates.toPlainText() == "print('hi')"
    panel.set_group("q0", OCEAN_QUERY)
    assert panel.candidates.toPlainText() == "Indian Ocean"


def test_score_button_emits_the_typed_lines(panel, qtbot):
    panel.set_group("q1", "Say hi")
    panel.candidates.setPlainText("  Hello there \n\nHi!\n")
    with qtbot.waitSignal(panel.score_requested, timeout=2000) as blocker:
        qtbot.mouseClick(panel.score_button, Qt.MouseButton.LeftButton)
    assert blocker.args == ["q1", ["Hello there", "Hi!"]]


def test_ctrl_enter_in_the_candidates_box_scores(panel, qtbot):
    panel.set_group("q0", OCEAN_QUERY)
    panel.candidates.setFocus()
    with qtbot.waitSignal(panel.score_requested, timeout=2000) as blocker:
        qtbot.keyClick(panel.candidates, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert blocker.args == ["q0", ["Atlantic Ocean", "Pacific Ocean"]]
    assert panel.candidates.toPlainText().count("\n") == 1  # the key did not also insert a newline


def test_nothing_to_score_says_so_and_emits_nothing(panel, qtbot):
    panel.set_group("q1", "Say hi")
    with qtbot.assertNotEmitted(panel.score_requested):
        qtbot.mouseClick(panel.score_button, Qt.MouseButton.LeftButton)
    assert "one per line" in panel.message.text() and panel.message.isVisible()
    panel.set_group(None, "")
    assert not panel.score_button.isEnabled()


def test_busy_disables_scoring(panel, qtbot):
    panel.set_group("q0", OCEAN_QUERY)
    panel.set_busy(True)
    assert not panel.score_button.isEnabled() and panel.busy_bar.isVisible()
    with qtbot.assertNotEmitted(panel.score_requested):
        panel.request_score()
    panel.set_busy(False)
    assert panel.score_button.isEnabled() and not panel.busy_bar.isVisible()


def test_scores_show_logprob_probability_share_perplexity_and_shaded_tokens(panel):
    panel.set_group("q0", OCEAN_QUERY)
    atlantic = Score("Atlantic Ocean", (tok(1, "Atl", 0.02), tok(2, "antic", 0.99), tok(3, " Ocean", 0.7)))
    pacific = Score("Pacific Ocean", (tok(4, "Pacific", 0.61), tok(3, " Ocean", 0.93)))
    panel.show_scores((atlantic, pacific))
    table = panel.table
    assert table.rowCount() == 2
    p_atl, p_pac = 0.02 * 0.99 * 0.7, 0.61 * 0.93
    assert table.item(0, 1).text() == f"{math.log(p_atl):.3f}".replace("-", "\u2212")
    assert table.item(1, 2).text() == f"{p_pac:.3g}"
    assert table.item(1, 3).text() == f"{100 * p_pac / (p_atl + p_pac):.1f}%"
    assert table.item(1, 4).text() == f"{math.exp(-math.log(p_pac) / 2):.3f}"
    assert table.item(0, 5).text() == "3"
    assert table.item(1, 1).font().bold() and not table.item(0, 1).font().bold()  # the likelier candidate
    view = table.cellWidget(0, 0)
    assert isinstance(view, TokenTextView) and view.text() == "Atlantic Ocean" and view.token_count == 3
    panel.options.set_shading("entropy")
    assert view.mode == "entropy"
    panel.set_group("q1", "other", (pacific,))  # the panel shows the scores it is given, keeps none
    assert table.rowCount() == 1 and table.cellWidget(0, 0).text() == "Pacific Ocean"
    panel.set_group("q0", "a new run reused the id for another query")
    assert table.rowCount() == 0 and panel.candidates.toPlainText() == ""


def test_shares_are_a_softmax_of_logprobs():
    a = Score("a", (tok(1, "a", 0.3),))
    b = Score("b", (tok(2, "b", 0.1),))
    assert shares([a, b]) == pytest.approx([0.75, 0.25])
    deep = Score("c", tuple(TokenInfo(i, "c", b"c", -400.0, None, 1.0, 1) for i in range(3)))  # e^-1200 each
    assert shares([deep, deep]) == pytest.approx([0.5, 0.5])  # no underflow to 0/0
    assert shares([]) == []


def test_a_narrow_table_keeps_the_responses_start_in_sight(qtbot, panel):
    panel.resize(380, 300)
    panel.set_group("q0", OCEAN_QUERY)
    long = "Pacific Ocean, by far the largest and deepest of the oceans " * 3
    panel.show_scores((Score(long, tuple(tok(i, w, 0.5) for i, w in enumerate(long.split(" ")))),))
    table = panel.table
    # the response keeps a readable width (the numbers scroll in from the right) and its start stays in sight
    qtbot.waitUntil(lambda: table.horizontalHeader().sectionSize(0) >= RESPONSE_MIN_WIDTH)
    assert table.horizontalScrollBar().value() == 0
    assert table.horizontalHeaderItem(0).text() == "Response"
