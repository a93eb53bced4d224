"""The side panel and nothing lost (issue 9): the wheel, the model's name, a failed load, a refused run."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from gui_kit import load, pane_texts, run_to_end


def wheel(widget, steps: int) -> None:
    """Scroll the mouse wheel over the middle of a widget (negative: down)."""
    centre = QPointF(widget.rect().center())
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(widget.rect().center())), QPoint(),
                        QPoint(0, 120 * steps), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                        Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_the_wheel_over_an_unfocused_spin_box_scrolls_the_panel_not_the_value(qtbot, window):
    temperature = window.controls.temperature
    temperature.setValue(0.7)
    window.views.tree_view.setFocus()
    wheel(temperature, -5)
    assert temperature.value() == 0.7
    wheel(window.controls.reward_box.combo, -2)
    assert window.controls.reward_box.combo.currentIndex() == 0
    temperature.setFocus()
    qtbot.waitUntil(temperature.hasFocus)
    wheel(temperature, -2)  # focused: the wheel is for it
    assert temperature.value() < 0.7


def test_the_status_bar_names_the_model_as_the_picker_does(qtbot, make_window, fake_model):
    from explorer.core.models.discovery import ModelEntry

    window = make_window(discover=lambda: [ModelEntry(fake_model, "SmolLM2 (as listed)", "models/")])
    qtbot.waitUntil(lambda: window.controls.model_combo.count() == 1, timeout=5000)
    load(qtbot, window, fake_model)
    assert window.model_info.name == "fake-model"  # what the file calls itself
    assert window.controls.model_combo.currentText().startswith("SmolLM2 (as listed)")
    assert window.status.model_label.text().startswith("SmolLM2 (as listed)")  # the same name in both


def test_a_model_that_fails_to_load_leaves_the_previous_one_loaded(qtbot, window, fake_model, bad_model, dialogs):
    load(qtbot, window, fake_model)
    before = window.model_info
    with qtbot.waitSignal(window.model_load_failed, timeout=5000):
        window.load_model(str(bad_model))
    assert "not a GGUF" in dialogs.errors[-1][1] and "still loaded" in dialogs.errors[-1][1]
    assert window.model_info == before and window.controls.current_model_path() == before.path
    run_to_end(qtbot, window, k=2, max_tokens=6)  # and it answers
    assert window.session.model == before


def test_a_refused_run_leaves_the_previous_results_on_screen(qtbot, window, fake_model, dialogs):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=2, max_tokens=8)
    shown, session = pane_texts(window), window.session
    window.controls.k_spin.setValue(64)
    window.controls.max_tokens.setValue(32_000)  # 64 x 32k tokens cannot fit the fake's 2048-token context
    with qtbot.waitSignal(window.run_done, timeout=5000) as blocker:
        assert window.run() is not None
    assert blocker.args == [False, True] and "context" in dialogs.errors[-1][1].lower()
    assert window.session is session and pane_texts(window) == shown and window.views.group_tabs.count() >= 1
    assert not window.is_running() and window.controls.run_button.isEnabled()


def test_settings_are_saved_when_changed_not_only_on_quit(qtbot, window, gui_settings):
    window.controls.temperature.setValue(0.35)
    qtbot.waitUntil(lambda: '"temperature": 0.35' in (gui_settings.value("controls", "") or ""), timeout=3000)
    window.views.options.set_shading("entropy")
    qtbot.waitUntil(lambda: gui_settings.value("view/shading") == "entropy", timeout=3000)


def test_running_again_with_rollouts_not_exported_asks_first(qtbot, window, fake_model, dialogs, tmp_path):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=2, max_tokens=6)
    first = window.session
    dialogs.answers["Discard the rollouts not exported?"] = False
    assert window.run() is None and window.session is first  # kept
    assert dialogs.questions[-1][0] == "Discard the rollouts not exported?" and "4 rollouts" in dialogs.questions[-1][1]  # 2 queries x 2
    assert not window.files.open_rollout_set(str(tmp_path / "other.json")) and window.session is first
    n_asked = len(dialogs.questions)
    assert window.files.export_rollout_set(str(tmp_path / "kept.json"))
    run_to_end(qtbot, window, k=2, max_tokens=6)  # exported: no question
    assert len(dialogs.questions) == n_asked and window.session is not first


def test_quitting_with_rollouts_not_exported_asks_and_no_keeps_the_window(qtbot, window, fake_model, dialogs):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=2, max_tokens=6)
    dialogs.answers["Discard the rollouts not exported?"] = False
    assert not window.close() and window.isVisible() and window.runs.host.is_alive()
    dialogs.answers["Discard the rollouts not exported?"] = True
    assert window.close()


def test_empty_views_say_what_to_do_until_there_are_rollouts(qtbot, window, fake_model):
    views = window.views
    assert views.panes_stack.currentWidget() is views.empty_hint and "Run" in views.empty_hint.text()
    assert views.tree_stack.currentIndex() == 0
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=2, max_tokens=6)
    assert views.panes_stack.currentIndex() == 1 and views.tree_stack.currentIndex() == 1


def test_help_explains_every_mouse_action_as_well_as_the_keys():
    from explorer.gui.window.actions import shortcuts_html

    text = shortcuts_html()
    for words in ("Ctrl+Enter", "Hover a token", "Right-click or double-click", "ghosts", "Ctrl+wheel", "boxes",
                  "Right-click a token in a pane", "Rollout table"):
        assert words in text


def test_run_stop_queries_k_and_temperature_stay_in_sight_and_the_rest_folds(qtbot, window):
    window.resize(1440, 900)
    qtbot.waitUntil(lambda: window.height() == 900)
    c = window.controls
    for widget in (c.run_button, c.stop_button, c.k_spin, c.temperature, c.query_editor):
        bottom = widget.mapTo(window, widget.rect().bottomLeft()).y()
        assert widget.isVisible() and bottom < window.height() - window.statusBar().height(), widget
        assert not c.scroll.isAncestorOf(widget)  # not in the scrolling part
    sampling = c.sections["sampling"]
    assert sampling.is_expanded() and c.top_p.isVisible()
    sampling.header.click()
    assert not sampling.is_expanded() and not c.top_p.isVisible()


def test_scoring_needs_no_run(qtbot, window, fake_model):
    load(qtbot, window, fake_model)
    assert window.session is None
    window.controls.query_editor.list.setCurrentRow(0)
    scoring = window.views.scoring
    assert scoring.query == "Which is the largest ocean?" and scoring.score_button.isEnabled()
    scoring.candidates.setPlainText("Atlantic Ocean\nPacific Ocean")
    with qtbot.waitSignal(window.runs.score_done, timeout=5000):
        scoring.score_button.click()
    group = window.session.group(window.views.current_group_id())
    assert group.query == "Which is the largest ocean?" and group.rollouts == () and group.prompt
    assert [s.response for s in group.scores] == ["Atlantic Ocean", "Pacific Ocean"]
    assert scoring.table.rowCount() == 2 and window.views.group_tabs.count() == 1
    assert window.session.rollout_set().groups[0].scores == group.scores  # exportable like any scores


def test_sort_order_and_compact_mode_are_kept(qtbot, make_window, gui_settings):
    window = make_window()
    window.views.panes.set_sort("logprob")
    window.menu_actions["compact"].trigger()
    qtbot.waitUntil(lambda: gui_settings.value("view/sort") == "logprob"
                    and str(gui_settings.value("view/compact")).lower() == "true", timeout=3000)
    again = make_window()  # the same settings, as after a crash (no clean quit)
    assert again.views.panes.sort_key == "logprob" and again.menu_actions["compact"].isChecked()
