"""Work a user does is never lost without a word: recovered runs, unexported counts, scores typed before a run."""

from __future__ import annotations

from explorer.gui.window.recovery import RecoveryStore
from gui_kit import load, run_to_end

DISCARD = "Discard the rollouts not exported?"


def _leave_a_journal(qtbot, make_window, fake_model, tmp_path):
    """A run's set, left in the recovery folder as a crash leaves it."""
    first = make_window()
    load(qtbot, first, fake_model)
    run_to_end(qtbot, first, k=2, max_tokens=6)
    left = first.session.rollout_set()
    first.files.export_rollout_set(str(tmp_path / "first.json"))
    first.close()
    store = RecoveryStore(tmp_path / "recovery")
    store.save_async(left).result(5)
    store.close()
    return left


def test_a_recovered_run_counts_as_unexported_and_keeps_its_journal_until_exported(qtbot, make_window, fake_model,
                                                                                  dialogs, tmp_path):
    left = _leave_a_journal(qtbot, make_window, fake_model, tmp_path)
    window = make_window()
    assert window.files.offer_recovery()  # Yes
    journal = window.files.recovery.path
    window.files.recovery.flush()
    assert journal.exists()  # recovering is not keeping: the journal is still the only copy
    n = sum(len(g.rollouts) for g in left.groups)
    dialogs.answers[DISCARD] = False
    asked = len(dialogs.questions)
    assert not window.close() and window.isVisible()  # Ctrl+Q asks first
    assert dialogs.questions[asked][0] == DISCARD and f"{n} rollouts" in dialogs.questions[asked][1]
    window.files.recovery.flush()
    assert journal.exists()
    assert window.files.export_rollout_set(str(tmp_path / "kept.json"))
    window.files.recovery.flush()
    assert not journal.exists()
    asked = len(dialogs.questions)
    assert window.close() and len(dialogs.questions) == asked  # exported: nothing to ask


def test_a_branch_of_a_recovered_run_keeps_the_journal_after_its_clean_end(qtbot, make_window, fake_model, dialogs,
                                                                           tmp_path):
    _leave_a_journal(qtbot, make_window, fake_model, tmp_path)
    window = make_window()
    load(qtbot, window, fake_model)
    assert window.files.offer_recovery()
    with qtbot.waitSignal(window.run_done, timeout=10000):
        assert window.request_branch("q0", "q0.r0", 2, None) is not None
    window.files.recovery.flush()
    saved = window.files.recovery.load()
    assert len(saved.groups[0].rollouts) == len(window.session.group("q0").rollouts)  # recovered + branch


def test_after_an_export_only_the_rollouts_made_since_count_as_unexported(qtbot, window, fake_model, dialogs,
                                                                         tmp_path):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=5, max_tokens=6)  # 2 queries x 5
    assert window.files.export_rollout_set(str(tmp_path / "set.json"))
    window.controls.k_spin.setValue(5)
    with qtbot.waitSignal(window.run_done, timeout=10000):
        window.request_branch("q0", "q0.r1", 2, None)  # 5 resampled rollouts
    dialogs.answers[DISCARD] = False
    assert not window.files.open_rollout_set(str(tmp_path / "set.json"))
    title, question = dialogs.questions[-1]
    assert title == DISCARD and question.startswith("5 rollouts")


def test_scores_typed_and_computed_before_a_run_stay_with_their_query(qtbot, window, fake_model):
    load(qtbot, window, fake_model)
    window.controls.set_queries(["Which is the largest ocean?", "Name a colour."])
    editor, scoring = window.controls.query_editor, window.views.scoring
    editor.list.setCurrentRow(0)
    scoring.candidates.setPlainText("Atlantic Ocean\nPacific Ocean")
    with qtbot.waitSignal(window.runs.score_done, timeout=5000):
        scoring.score_button.click()
    before = window.session.scores(window.views.current_group_id())
    assert [s.response for s in before] == ["Atlantic Ocean", "Pacific Ocean"]
    window.controls.set_queries(["Name a colour.", "Which is the largest ocean?"])  # another order, same query
    run_to_end(qtbot, window, k=2, max_tokens=6)
    gid = next(g for g in window.session.group_ids if window.session.header(g).query.startswith("Which"))
    assert window.session.scores(gid) == before  # kept with their query, in the run's group
    window.views.select_group(gid)
    assert scoring.table.rowCount() == 2 and scoring.candidates.toPlainText() == "Atlantic Ocean\nPacific Ocean"


def test_scores_of_a_query_the_run_does_not_sample_stay_as_a_group_of_their_own(qtbot, window, fake_model):
    load(qtbot, window, fake_model)
    window.controls.set_queries(["Spell 'ocean'.", "Name a colour."])
    window.controls.query_editor.list.setCurrentRow(0)
    window.views.scoring.candidates.setPlainText("ocean")
    with qtbot.waitSignal(window.runs.score_done, timeout=5000):
        window.views.scoring.score_button.click()
    window.controls.set_queries(["Name a colour."])
    run_to_end(qtbot, window, k=2, max_tokens=6)
    queries = {window.session.header(g).query: g for g in window.session.group_ids}
    assert set(queries) == {"Name a colour.", "Spell 'ocean'."} and window.views.group_tabs.count() == 2
    assert [s.response for s in window.session.scores(queries["Spell 'ocean'."])] == ["ocean"]


def test_a_box_selected_in_one_tab_never_filters_another_tabs_table(qtbot, window, fake_model):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=6, max_tokens=8)
    views = window.views
    tree = views.tree_view.tree
    box = next(n for n in range(1, len(tree)) if not tree.ghost_mask[n] and tree.counts[n] < 6)
    views.tree_view.select_node(box)
    assert views.rollout_table.proxy.allowed is not None  # filtered in the first tab
    views.group_tabs.setCurrentIndex(1)
    table = views.rollout_table
    assert table.proxy.allowed is None and "shown" not in table.summary.text()
    assert sum(row.count for row in table.visible_rows()) == 6


def test_the_side_plot_follows_a_row_selected_in_the_table(qtbot, window, fake_model):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=4, max_tokens=8)
    views = window.views
    last = window.session.group("q0").rollouts[-1].id
    assert views.side_plot.rollout != last
    views.rollout_table.select_rollouts([last])
    assert views.side_plot.rollout == last


def test_help_fits_the_screen_and_scrolls(qtbot, window):
    from explorer.gui.window.actions import shortcuts_dialog

    dialog = shortcuts_dialog(window)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    room = window.screen().availableGeometry()
    assert dialog.frameGeometry().height() <= room.height() and dialog.width() <= room.width()
    text = dialog.findChild(type(dialog.layout().itemAt(0).widget()))
    dialog.resize(dialog.width(), 300)  # shorter than its text: the text scrolls
    qtbot.waitUntil(lambda: text.verticalScrollBar().maximum() > 0, timeout=2000)


def test_pasting_lines_into_the_query_list_makes_one_query_per_line(qtbot, window):
    editor = window.controls.query_editor
    editor.set_queries(["First"])
    lines = [f"Query {i}" for i in range(20)]
    editor.list.setCurrentRow(0)
    assert editor.paste_lines("\n".join(lines) + "\n\n") == 20
    assert [q.text for q in editor.queries()] == ["First"] + lines
    # a query edited into several lines (a paste while editing it) is offered as one query per line
    editor.set_queries(["First"])
    editor.list.item(0).setText("a\nb\n\nc")
    assert editor.split_offer.isVisibleTo(editor) and "3" in editor.split_button.text()
    editor.split_button.click()
    assert [q.text for q in editor.queries()] == ["a", "b", "c"] and not editor.split_offer.isVisibleTo(editor)
    editor.list.item(0).setText("def f():\n    return 1")  # a multi-line query on purpose: kept as one
    editor.keep_button.click()
    assert editor.queries()[0].text == "def f():\n    return 1"


def test_log_ratio_shading_is_not_restored_at_start_without_a_reference(qtbot, make_window, gui_settings):
    gui_settings.setValue("view/shading", "log_ratio")
    window = make_window()
    assert window.runs.reference_policy.in_use is None and window.views.options.shading == "prob"
    gui_settings.setValue("view/shading", "entropy")
    assert make_window().views.options.shading == "entropy"


def test_the_scoring_table_keeps_room_for_the_response(qtbot, window, fake_model):
    from explorer.gui.views.scoring import RESPONSE_MIN_WIDTH

    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=3, max_tokens=6)
    with qtbot.waitSignal(window.runs.score_done, timeout=5000):
        window.request_score("q0", ["Atlantic Ocean", "Pacific Ocean"])
    table = window.views.scoring.table
    assert table.rowCount() == 2
    qtbot.waitUntil(lambda: table.horizontalHeader().sectionSize(0) >= RESPONSE_MIN_WIDTH, timeout=3000)
    table.resize(240, table.height())  # narrower than the numbers and the response together: it scrolls instead
    qtbot.waitUntil(lambda: table.horizontalHeader().sectionSize(0) >= RESPONSE_MIN_WIDTH, timeout=3000)
