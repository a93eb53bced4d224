"""What keeps the window responsive while a run streams: panes made a few per refresh, a tree range that steps ahead
of the growing tree, a side plot that waits for its own turn, an info label that cannot widen the tree, and refresh
ticks that draw one view at a time (with a full redraw before run_done)."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtWidgets import QApplication

from explorer.core.session import Session
from gui_kit import show
from kit import run_started, sampled_tok
from explorer.core.tree.token_tree import TokenTree
from explorer.core.types import TokenBatch, TokenEvent, TokenInfo
from explorer.gui.window.main_window import MainWindow
from explorer.gui.panes.panes import RolloutPanes
from explorer.gui.views.side_plot import SidePlot
from explorer.gui.tree.tree_items import stepped_end
from explorer.gui.tree.tree_view import TokenTreeView


def tok(tid: int) -> TokenInfo:
    return sampled_tok(tid, f" w{tid}", 0.6, alternatives=((tid + 1000, " x", 0.1),))


def step(position: int, k: int) -> TokenBatch:
    return TokenBatch(tuple(TokenEvent("q0", f"q0.r{i}", position, tok(position * 10 + i), f" w{position * 10 + i}")
                            for i in range(k)))


@pytest.fixture
def panes(qtbot) -> RolloutPanes:
    return show(qtbot, RolloutPanes(), 1000, 400)


@pytest.mark.parametrize("k", [5, 10])
def test_pane_budget_makes_panes_a_few_per_refresh(panes, k):
    session = Session()
    session.add(run_started(k))
    session.add(step(0, k))
    panes.set_pane_budget(2)
    panes.show_group(session, "q0")
    # compact or not is decided on the panes there will be, not on those made so far
    assert {p.compact for p in panes.panes()} == {k > 8}
    made = [len(panes.panes())]
    while len(panes.panes()) < k:
        panes.refresh()
        made.append(len(panes.panes()))
    assert made == [min(n, k) for n in range(2, k + 2, 2)]
    assert {p.compact for p in panes.panes()} == {k > 8}
    assert [p.text() for p in panes.panes()] == [f" w{i}" for i in range(k)]


def test_pane_budget_none_makes_them_all_at_once(panes):
    session = Session()
    session.add(run_started(6))
    panes.set_pane_budget(2)
    panes.show_group(session, "q0")
    panes.set_pane_budget(None)
    panes.refresh()
    assert len(panes.panes()) == 6


def test_stepped_end_lies_past_the_tree_and_moves_in_steps():
    xs = np.arange(0, 600)
    ends = np.array([stepped_end(float(x)) for x in xs])
    assert np.all(ends > xs) and np.all(np.diff(ends) >= 0)
    assert len(np.unique(ends)) < len(xs) / 6  # a few steps, not one move per token
    assert np.all(ends - xs <= np.maximum(9, xs / 4 + 1))  # headroom stays a fraction of the tree


def growing_tree(view: TokenTreeView, k: int, length: int):
    """Grow a k-rollout tree one position at a time, refreshing the view after each; yields the view's x range."""
    tree = TokenTree("q0", "prompt")
    for i in range(k):
        tree.register(f"q0.r{i}")
    view.set_tree(tree)
    for position in range(length):
        for i in range(k):
            tree.add_token(f"q0.r{i}", position, tok(position * 10 + (i % 2)))
        view.refresh()
        QApplication.processEvents()
        yield tuple(view.plot.vb.viewRange()[0])


@pytest.fixture
def view(qtbot) -> TokenTreeView:
    return show(qtbot, TokenTreeView(), 900, 400)


def test_growing_tree_range_steps_ahead_then_fits(view):
    view.set_growing(True)
    ranges = list(growing_tree(view, 3, 40))
    depth = 39
    assert ranges[-1][1] >= depth  # the whole tree is in view
    assert len(set(ranges)) <= 8  # moved in a few steps, not at each of the 40 refreshes
    view.set_growing(False)
    view.refresh()
    QApplication.processEvents()
    fitted = view.plot.vb.viewRange()[0]
    assert depth <= fitted[1] < ranges[-1][1]  # back to an exact fit, without the headroom


def test_tree_range_follows_every_refresh_when_not_growing(view):
    ranges = list(growing_tree(view, 3, 20))
    assert len(set(ranges)) == len(ranges)


def test_info_label_text_does_not_widen_the_tree_view(view):
    before = view.minimumSizeHint().width()
    view.info_label.setText("8 rollouts · 123456 tokens · 7890 branch points · 1234567 alternatives " * 3)
    QApplication.processEvents()  # the layout takes the new text in
    assert view.minimumSizeHint().width() == before


def test_held_side_plot_waits_for_its_turn(qtbot, view):
    side = SidePlot()
    qtbot.addWidget(side)
    side.follow(view)
    frames = growing_tree(view, 2, 12)
    for _ in range(4):
        next(frames)
    assert not side.is_stale() and len(side.mean_prob.getData()[1]) == 4
    side.set_held(True)
    next(frames)
    assert side.is_stale() and len(side.mean_prob.getData()[1]) == 4  # not redrawn with the tree
    side.refresh()
    assert not side.is_stale() and len(side.mean_prob.getData()[1]) == 5
    next(frames)
    side.set_held(False)  # letting go catches up at once
    assert not side.is_stale() and len(side.mean_prob.getData()[1]) == 6


@pytest.fixture
def window(qtbot, fake_factory, gui_settings, tmp_path):
    win = MainWindow(fake_factory, settings=gui_settings, show_error=lambda *_: None, ask=lambda *_: True,
                     recovery_dir=str(tmp_path / "recovery"), discover=lambda: [])
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()


def test_refresh_ticks_take_turns_and_run_done_follows_a_full_redraw(qtbot, window, fake_factory, fake_model):
    fake_factory.configure = lambda e: (setattr(e, "step_delay", 0.01), setattr(e, "hold_at_step", 8))
    with qtbot.waitSignal(window.model_ready, timeout=5000):
        window.load_model(str(fake_model))
    window.controls.set_queries(["Which is the largest ocean?"])
    window.controls.k_spin.setValue(3)
    window.controls.max_tokens.setValue(12)
    window.run()
    window.runs.timer.stop()  # this test plays the refresh timer's ticks itself
    qtbot.waitUntil(lambda: fake_factory.engine.held.is_set()
                    and any(isinstance(e, TokenBatch) for _, batch in window.runs._pending for e in batch), timeout=5000)

    window.drain()  # outside the ticks, while streaming: feeds the session (and makes the tab) but draws no tree
    assert window.session.tokens_done > 0 and window.views.group_tabs.count() == 1
    assert window.views.tree_view.tree is None and len(window.views.panes.panes()) == 2  # two panes per refresh
    window.drain(spread=True)  # the tree's turn: it switches to the group's tree; no new pane
    assert window.views.tree_view.tree is window.session.trees["q0"] and len(window.views.panes.panes()) == 2
    window.drain(spread=True)  # the tree was just drawn: the panes' turn
    assert len(window.views.panes.panes()) == 3

    with qtbot.waitSignal(window.run_done, timeout=10000):
        window.runs.timer.start()
        fake_factory.engine.release.set()
    rollouts = window.session.group("q0").rollouts
    assert [p.view.token_count for p in window.views.panes.panes()] == [len(r.tokens) for r in rollouts]
    assert not window.views.tree_view.is_stale() and not window.views.side_plot.is_stale()
    assert set(window.views.tree_view.tree.rollout_ids) == {r.id for r in rollouts}
