"""Where the window's parts sit: the tree leads from k = 16 (at 1440x900 and at 1024x700), the panes lead at k = 5,
every panel is a dock a user can hide and move, the layout is kept in the settings and can be reset, Ctrl+T focuses
the tree, and the rollout table's numbers fit without a sideways scroll."""

from __future__ import annotations

import dataclasses

import pytest
from PySide6.QtCore import Qt

from explorer.gui.views.panel import on_screen
from explorer.gui.views.rollout_table import COLUMNS, ELLIPSIS, PIECES_ROLE, RESPONSE_MIN_WIDTH
from explorer.gui.window.main_window import MainWindow
from explorer.gui.window.panel_layout import PANES_LEAD_K
from gui_kit import load, run_to_end

OCEAN = "Which is the largest ocean?"
K = 24  # the fake engine's context holds 24 rollouts of this query


@pytest.fixture
def sized_window(qtbot, fake_factory, gui_settings, dialogs, tmp_path):
    """A window given its size before it is first shown (as the settings or --size do)."""
    windows = []

    def make(width: int, height: int, settings=gui_settings) -> MainWindow:
        window = MainWindow(fake_factory, settings=settings, show_error=dialogs.error, ask=dialogs.ask,
                            recovery_dir=str(tmp_path / "recovery"), discover=lambda: [])
        qtbot.addWidget(window)
        window.resize(width, height)
        window.show()
        qtbot.waitExposed(window)
        windows.append(window)
        return window

    yield make
    dialogs.answers["Discard the rollouts not exported?"] = True
    for window in windows:
        window.close()


def tree_share(window: MainWindow) -> tuple[float, float]:
    view = window.views.tree_view
    return view.width() / window.width(), view.height() / window.height()


def leads(window: MainWindow) -> bool:
    """The tree has at least 60 % of the window's width and of its height."""
    width, height = tree_share(window)
    return width >= 0.6 and height >= 0.6


@pytest.mark.parametrize("size", [(1440, 900), (1024, 700)])
def test_from_k_16_the_tree_takes_most_of_the_window(qtbot, sized_window, fake_model, dialogs, size):
    window = sized_window(*size)
    load(qtbot, window, fake_model)
    assert run_to_end(qtbot, window, k=K, max_tokens=8, queries=[OCEAN]) == [False, False], dialogs.errors
    assert window.panels.arrangement == "tree"
    qtbot.waitUntil(lambda: leads(window), timeout=3000)
    view = window.views.tree_view
    if size == (1440, 900):
        assert view.width() >= 1000 and view.height() >= 500
    # the others are one click away: tabs under the tree, the panes among them
    docks = window.panels.docks
    assert window.dockWidgetArea(docks["table"]) == Qt.DockWidgetArea.BottomDockWidgetArea
    assert docks["panes"] in window.tabifiedDockWidgets(docks["table"])
    assert docks["table"].isVisible() and docks["controls"].isVisible()
    assert window.controls.run_button.isVisible()


def test_up_to_k_8_the_panes_lead_above_the_tree(qtbot, sized_window, fake_model):
    window = sized_window(1440, 900)
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=5, max_tokens=12)
    assert window.panels.arrangement == "panes" and PANES_LEAD_K >= 5
    panes = window.panels.docks["panes"]
    assert window.dockWidgetArea(panes) == Qt.DockWidgetArea.TopDockWidgetArea and panes.isVisible()
    assert len(window.views.panes.panes()) == 5
    tree = window.views.tree_view
    qtbot.waitUntil(lambda: tree.height() >= 0.25 * window.height(), timeout=3000)
    assert panes.mapTo(window, panes.rect().topLeft()).y() < tree.mapTo(window, tree.rect().topLeft()).y()


def test_each_arrangement_is_kept_in_the_settings_and_reset_goes_back(qtbot, make_window, fake_model,
                                                                      gui_settings):
    window = make_window()
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=K, max_tokens=8, queries=[OCEAN])
    docks = window.panels.docks
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, docks["table"])  # the user moves the table
    docks["stats"].toggleViewAction().trigger()  # and hides the statistics
    assert not docks["stats"].isVisible()
    qtbot.waitUntil(lambda: gui_settings.value("layout/tree") is not None, timeout=3000)  # saved as it changes
    window.close()

    again = make_window()
    again.controls.k_spin.setValue(K)
    again.panels.show_for(again.controls.k())
    docks = again.panels.docks
    assert again.dockWidgetArea(docks["table"]) == Qt.DockWidgetArea.RightDockWidgetArea
    assert not docks["stats"].isVisible()
    again.panels.show_for(5)  # the other arrangement has its own defaults
    assert again.dockWidgetArea(docks["table"]) == Qt.DockWidgetArea.BottomDockWidgetArea
    again.panels.show_for(K)
    assert again.dockWidgetArea(docks["table"]) == Qt.DockWidgetArea.RightDockWidgetArea
    again.menu_actions["reset_layout"].trigger()
    assert again.dockWidgetArea(docks["table"]) == Qt.DockWidgetArea.BottomDockWidgetArea
    assert all(dock.isVisible() or again.tabifiedDockWidgets(dock) for dock in docks.values())
    again.window_settings.save()
    assert gui_settings.value("layout/panes") is None  # reset: nothing of the user's kept for the other either


def test_ctrl_t_gives_the_tree_the_window_and_brings_the_panels_back(qtbot, make_window, fake_model):
    window = make_window()
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=K, max_tokens=8, queries=[OCEAN])
    action = window.menu_actions["tree_focus"]
    assert action.shortcut().toString() == "Ctrl+T"
    visible = {name for name, dock in window.panels.docks.items() if dock.isVisible()}
    action.trigger()
    assert not any(dock.isVisible() for dock in window.panels.docks.values())
    qtbot.waitUntil(lambda: window.views.tree_view.width() >= 0.9 * window.width(), timeout=3000)
    assert window.views.group_tabs.isVisible()  # the query tabs stay
    action.trigger()
    assert {name for name, dock in window.panels.docks.items() if dock.isVisible()} == visible


def _annotated(rollout_set):
    """Every number the table can show (rewards, a branch, a reference policy's facts), and a prefix every rollout
    shares (the first rollout's first three tokens)."""
    from explorer.core.types import ReferenceInfo

    groups = []
    for group in rollout_set.groups:
        rollouts = []
        prefix = group.rollouts[0].tokens[:3]
        prefix_text = "".join(t.token for t in prefix)
        for i, r in enumerate(group.rollouts):
            tokens = tuple(dataclasses.replace(t, ref_logprob=t.logprob - 0.25, kl=0.125) for t in prefix + r.tokens)
            extra = dict(parent_id=group.rollouts[0].id, branch_position=1) if i == len(group.rollouts) - 1 else {}
            rollouts.append(dataclasses.replace(r, text=prefix_text + r.text, tokens=tokens, reward=float(i % 2),
                                                advantage=-1.0 + i / 16, **extra))
        groups.append(dataclasses.replace(group, rollouts=tuple(rollouts)))
    return dataclasses.replace(rollout_set, groups=tuple(groups),
                               reference_policy=ReferenceInfo("system", "the same model told to be a pirate", "f"))


@pytest.mark.parametrize("k", [5, 24])
def test_every_number_of_the_table_fits_without_a_sideways_scroll(qtbot, sized_window, fake_model, k):
    window = sized_window(1440, 900)
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=k, max_tokens=8, queries=[OCEAN])
    rich = _annotated(window.session.rollout_set())
    window.session.mark_exported()
    window.show_rollout_set(rich, "rich.json")
    table = window.views.rollout_table
    assert set(table.visible_columns()) == set(COLUMNS)  # rewards, branch and reference columns all shown
    header = table.view.horizontalHeader()
    qtbot.waitUntil(lambda: table.view.horizontalScrollBar().maximum() == 0
                    and header.sectionSize(0) >= RESPONSE_MIN_WIDTH, timeout=3000)
    for name in COLUMNS[1:]:
        column = COLUMNS.index(name)
        assert header.sectionSize(column) >= table.view.sizeHintForColumn(column), name  # never cut
    # the response starts where the rollouts part, not with the prefix they all share again
    model = table.model
    assert model.shared >= 3 and "after" in model.headerData(0, Qt.Orientation.Horizontal)
    first = rich.groups[0].rollouts[0]
    pieces = model.data(model.index(0, 0), PIECES_ROLE)
    assert pieces[0] == (ELLIPSIS, None)  # what it leaves out is marked
    shown = "".join(piece for piece, _ in pieces[1:])
    assert first.text[len(model.shared_text):].startswith(shown[:10]) and model.shared_text
    assert model.shared_text == "".join(t.token for t in first.tokens[:model.shared])


def test_panes_behind_the_table_wait_while_a_run_streams_and_catch_up_when_shown(qtbot, make_window, fake_factory,
                                                                                 fake_model):
    fake_factory.configure = lambda e: (setattr(e, "step_delay", 0.005), setattr(e, "hold_at_step", 6))
    window = make_window()
    load(qtbot, window, fake_model)
    window.controls.set_queries([OCEAN])
    window.controls.k_spin.setValue(K)
    window.controls.max_tokens.setValue(12)
    window.run()
    qtbot.waitUntil(fake_factory.engine.held.is_set, timeout=5000)
    views, docks = window.views, window.panels.docks
    qtbot.waitUntil(lambda: bool(views.panes.panes()), timeout=5000)
    assert not on_screen(views.panes)  # a tab behind the table: the tree leads

    def behind() -> int:
        window.drain()
        return sum(len(live.tokens) for live in window.session.live_rollouts("q0")[:len(views.panes.panes())]) - sum(
            pane.view.token_count for pane in views.panes.panes())

    for _ in range(12):  # the engine is held: a dozen refresh ticks would have drawn everything into shown panes
        with qtbot.waitSignal(window.runs.ticked, timeout=2000):
            pass
    assert behind() > 0  # what streamed is not drawn into hidden panes
    docks["panes"].raise_()
    qtbot.waitUntil(lambda: on_screen(views.panes) and behind() == 0, timeout=5000)  # shown: they catch up
    with qtbot.waitSignal(window.run_done, timeout=10000):
        fake_factory.engine.release.set()
    docks["table"].raise_()
    assert behind() == 0  # the run's end draws everything
