"""The rollout table: merged rows, sorting with missing values last, row selection, the tree's filter."""

from __future__ import annotations

import math

import pytest
from PySide6.QtCore import Qt

from explorer.core.types import Rollout, TokenInfo
from explorer.gui.views.rollout_table import COLUMNS, RolloutTable
from gui_kit import show


def rollout(i, words, prob=0.5, finish="stop", **extra):
    tokens = tuple(TokenInfo(n, w, w.encode(), math.log(prob), None, 1.0, 1, ()) for n, w in enumerate(words))
    return Rollout(f"q0.r{i}", i, 10 + i, "".join(words), tokens, finish, **extra)


ROLLOUTS = [rollout(0, ["The", " Pacific"], 0.9, reward=1.0, advantage=0.8),
            rollout(1, ["Atlantic"], 0.2, reward=0.0, advantage=-1.2),
            rollout(2, ["The", " Pacific"], 0.9, reward=1.0, advantage=0.8),
            rollout(3, ["The", " Pacific", " Ocean"], 0.6, "length", parent_id="q0.r0", branch_position=2)]


@pytest.fixture
def table(qtbot):
    widget = show(qtbot, RolloutTable(), 900, 300)
    widget.set_rollouts(ROLLOUTS)
    return widget


def cell(table, row, name):
    return table.proxy.index(row, COLUMNS.index(name)).data()


def test_identical_responses_are_one_row_with_count_and_share(table):
    rows = table.visible_rows()
    assert [r.ids for r in rows] == [["q0.r0", "q0.r2"], ["q0.r1"], ["q0.r3"]]
    assert cell(table, 0, "n") == "2 · 50%"
    assert cell(table, 0, "tokens") == "2" and cell(table, 0, "finish") == "stop"
    assert cell(table, 0, "log π(y|x)") == f"{2 * math.log(0.9):.3f}".replace("-", "\u2212")
    assert cell(table, 2, "from") == "r0 @2" and cell(table, 2, "reward") == "—"
    assert "4 rollouts · 3 distinct responses" in table.summary.text()
    assert table.grab().width() > 0  # the shaded preview paints


def test_sorting_by_a_column_keeps_missing_values_last(table):
    column = COLUMNS.index("reward")
    table.view.sortByColumn(column, Qt.SortOrder.AscendingOrder)
    assert [r.ids[0] for r in table.visible_rows()] == ["q0.r1", "q0.r0", "q0.r3"]
    table.view.sortByColumn(column, Qt.SortOrder.DescendingOrder)
    assert [r.ids[0] for r in table.visible_rows()] == ["q0.r0", "q0.r1", "q0.r3"]
    table.view.sortByColumn(COLUMNS.index("ppl"), Qt.SortOrder.AscendingOrder)
    assert [r.ids[0] for r in table.visible_rows()] == ["q0.r0", "q0.r3", "q0.r1"]


def test_selecting_rows_emits_every_rollout_behind_them(qtbot, table):
    with qtbot.waitSignal(table.rollouts_selected) as blocker:
        table.view.selectRow(0)
    assert blocker.args == [["q0.r0", "q0.r2"]]
    table.set_rollouts(ROLLOUTS)  # a refresh keeps the selection
    assert table.selected_rollouts() == ["q0.r0", "q0.r2"]


def test_filter_from_the_tree_keeps_the_rows_through_the_box(table):
    table.set_filter(["q0.r2", "q0.r3"])
    assert [r.ids for r in table.visible_rows()] == [["q0.r0", "q0.r2"], ["q0.r3"]]
    assert "2 shown" in table.summary.text()
    table.set_filter(None)
    assert len(table.visible_rows()) == 3


def test_streaming_rollouts_stay_separate_rows(table):
    table.set_rollouts([rollout(0, ["The"], finish=None), rollout(1, ["The"], finish=None)])
    assert len(table.visible_rows()) == 2
    assert cell(table, 0, "finish") == "streaming…"


def test_new_numbers_for_the_same_rows_keep_the_scroll_and_sort(table):
    table.view.sortByColumn(COLUMNS.index("tokens"), Qt.SortOrder.DescendingOrder)
    resets = []
    table.model.modelReset.connect(lambda: resets.append(1))
    grown = list(ROLLOUTS)
    grown[1] = rollout(1, ["Atlantic", " Ocean", " is", " big"], 0.2, reward=0.0, advantage=-1.2)
    table.set_rollouts(grown)
    assert not resets  # updated in place
    assert [r.ids[0] for r in table.visible_rows()] == ["q0.r1", "q0.r3", "q0.r0"]  # re-sorted by the new length


def test_the_sorted_column_shows_its_direction_in_its_header(table):
    column = COLUMNS.index("reward")
    table.view.sortByColumn(column, Qt.SortOrder.DescendingOrder)
    assert table.proxy.headerData(column, Qt.Orientation.Horizontal) == "R ▼"
    table.view.sortByColumn(COLUMNS.index("ppl"), Qt.SortOrder.AscendingOrder)
    assert table.proxy.headerData(column, Qt.Orientation.Horizontal) == "R"
    assert table.proxy.headerData(COLUMNS.index("ppl"), Qt.Orientation.Horizontal) == "ppl ▲"


def test_the_response_starts_where_it_leaves_the_shared_prefix(table):
    from explorer.gui.views.rollout_table import ELLIPSIS, PIECES_ROLE

    import dataclasses

    atlantic = rollout(1, ["The", " Atlantic", " Ocean"])
    atlantic = dataclasses.replace(atlantic, tokens=tuple(dataclasses.replace(t, id=t.id + 100 * (n > 0))
                                                          for n, t in enumerate(atlantic.tokens)))
    table.set_rollouts([rollout(0, ["The", " Pacific"]), atlantic])
    model = table.model
    assert model.shared == 1 and model.headerData(0, Qt.Orientation.Horizontal) == "response after “The”"
    assert [p for p, _ in model.data(model.index(1, 0), PIECES_ROLE)] == [ELLIPSIS, " Atlantic", " Ocean"]
    table.set_rollouts([rollout(0, ["The", " Pacific"])])  # one response: nothing shared with another, all shown
    assert model.shared == 0 and [p for p, _ in model.data(model.index(0, 0), PIECES_ROLE)] == ["The", " Pacific"]
