"""The window's tree, rollout table and panes kept in step (fake engine): a box selects and filters, rows pick the
panes, a token's menu in a pane branches."""

from __future__ import annotations

import numpy as np

from explorer.gui.window.main_window import MainWindow
from explorer.gui.views.links import DEFAULT_PANES
from gui_kit import load, run_to_end


def shown_panes(window: MainWindow) -> set[str]:
    return {pane.rollout_id for pane in window.views.panes.panes()}


def test_box_rows_and_panes_follow_each_other(qtbot, window, fake_model):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=12, max_tokens=10)
    ids = [r.id for r in window.session.group("q0").rollouts]
    table = window.views.rollout_table
    assert sum(row.count for row in table.visible_rows()) == 12
    assert shown_panes(window) == set(ids[:DEFAULT_PANES])  # a large k: the first few, not a wall of panes

    tree = window.views.tree_view.tree
    counts = np.asarray(tree.counts)
    box = next(n for n in range(1, len(tree)) if not tree.ghost_mask[n] and 1 < counts[n] < 12)
    through = set(tree.rollouts_through(box))
    window.views.tree_view.select_node(box)
    assert {rid for row in table.visible_rows() for rid in row.ids} >= through  # filtered to its rows
    assert all(through.intersection(row.ids) for row in table.visible_rows())
    assert set(table.selected_rollouts()) >= through and shown_panes(window) == set(table.selected_rollouts())

    window.views.tree_view.select_node(-1)  # cleared: the whole table, the default panes
    assert sum(row.count for row in table.visible_rows()) == 12
    assert shown_panes(window) == set(ids[:DEFAULT_PANES])

    table.select_rollouts([ids[11]])
    assert shown_panes(window) == {ids[11]}


def test_forcing_an_alternative_from_a_pane_branches_and_refits_the_tree(qtbot, window, fake_model):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=2, max_tokens=10)
    window.views.tree_view.plot.vb.setXRange(0, 2, padding=0)  # zoomed in before the branch
    pane = window.views.panes.pane("q0.r1")
    menu = pane.view.token_menu(3)
    force = next(a for a in menu.actions() if a.text().startswith("Force"))
    forced = force.data()[2]
    with qtbot.waitSignal(window.run_done, timeout=5000):
        force.trigger()
    rollouts = window.session.group("q0").rollouts
    assert len(rollouts) == 4
    for r in rollouts[2:]:
        assert r.parent_id == "q0.r1" and r.branch_position == 3 and r.token_ids[3] == forced
    x0, x1 = window.views.tree_view.plot.vb.viewRange()[0]
    assert x0 <= -1 and x1 >= 9  # refitted to show where the branch went
    assert sum(row.count for row in window.views.rollout_table.visible_rows()) == 4
