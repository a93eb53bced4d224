"""The main window with the scripted fake engine: streaming, stop, close, restart, errors, files, settings, recovery."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from explorer.core.files import export
from explorer.core.session import Session
from explorer.gui.window.main_window import MainWindow
from explorer.gui.window.recovery import RecoveryStore
from gui_kit import load, pane_texts, run_to_end

OCEAN = "Which is the largest ocean?"


def test_first_start_prefills_the_seed_queries(window):
    assert [q.text for q in window.controls.queries()] == [OCEAN, "Can you give me some python code?"]


def test_discovered_models_fill_the_picker_and_load_on_pick(qtbot, make_window, fake_model, main_thread_id):
    from explorer.core.models.discovery import ModelEntry

    seen = []

    def discover():
        seen.append(threading.get_ident())
        return [ModelEntry(fake_model, "fake-model", "models/")]

    window = make_window(discover=discover)
    qtbot.waitUntil(lambda: window.controls.model_combo.count() == 1, timeout=5000)
    assert seen and main_thread_id not in seen  # discovery reads files off the GUI thread
    with qtbot.waitSignal(window.model_ready, timeout=5000):
        window.controls.model_combo.activated.emit(0)
    assert window.model_info.path == str(fake_model)
    assert window.status.model_label.text().startswith("fake-model")


def test_run_streams_into_k_panes(qtbot, window, fake_factory, fake_model, main_thread_id):
    fake_factory.configure = lambda e: (setattr(e, "step_delay", 0.01), setattr(e, "hold_at_step", 25))
    load(qtbot, window, fake_model)
    window.controls.k_spin.setValue(4)
    window.controls.max_tokens.setValue(40)
    window.run()
    # tokens reach the panes while the run is still going (the engine is held at step 25)
    qtbot.waitUntil(lambda: bool(window.views.panes.panes()) and window.views.panes.panes()[0].view.token_count > 0, timeout=5000)
    assert window.is_running() and not fake_factory.engine.release.is_set()
    with qtbot.waitSignal(window.run_done, timeout=10000) as blocker:
        fake_factory.engine.release.set()
    assert blocker.args == [False, False]
    assert window.views.group_tabs.count() == 2
    assert window.views.current_group_id() == "q0"
    group = window.session.group("q0")
    assert len(window.views.panes.panes()) == 4
    assert [p.view.token_count for p in window.views.panes.panes()] == [len(r.tokens) for r in group.rollouts]
    assert pane_texts(window) == [r.text for r in group.rollouts]
    window.views.group_tabs.setCurrentIndex(1)
    assert window.views.panes.group_id == "q1" and len(window.views.panes.panes()) == 4
    assert not window.controls.stop_button.isEnabled()
    assert main_thread_id not in fake_factory.engine.threads()


def test_stop_mid_run_keeps_tokens_and_marks_cancelled(qtbot, window, fake_factory, fake_model):
    fake_factory.configure = lambda e: setattr(e, "hold_at_step", 5)
    load(qtbot, window, fake_model)
    window.controls.k_spin.setValue(3)
    window.controls.max_tokens.setValue(50)
    window.run()
    qtbot.waitUntil(fake_factory.engine.held.is_set, timeout=5000)
    assert window.controls.stop_button.isEnabled()
    with qtbot.waitSignal(window.run_done, timeout=5000) as blocker:
        window.menu_actions["stop"].trigger()
    assert blocker.args == [True, False]
    for gid in ("q0", "q1"):
        rollouts = window.session.group(gid).rollouts
        assert [len(r.tokens) for r in rollouts] == [5, 5, 5]
        assert {r.finish_reason for r in rollouts} == {"cancelled"}
    assert [p.view.token_count for p in window.views.panes.panes()] == [5, 5, 5]
    assert not window.is_running()


def test_run_while_running_restarts_cleanly(qtbot, window, fake_factory, fake_model):
    fake_factory.configure = lambda e: setattr(e, "hold_at_step", 3)
    load(qtbot, window, fake_model)
    window.controls.seed.setValue(1)
    first = window.run()
    qtbot.waitUntil(fake_factory.engine.held.is_set, timeout=5000)
    fake_factory.engine.hold_at_step = None
    window.controls.set_queries(["only this one"])
    window.controls.seed.setValue(100)
    with qtbot.waitSignal(window.run_done, timeout=10000) as blocker:
        second = window.run()
    assert second != first and blocker.args == [False, False]
    assert window.session.group_ids == ["q0"] and window.session.header("q0").query == "only this one"
    assert [r.seed for r in window.session.group("q0").rollouts] == [100 + i for i in range(window.controls.k())]
    assert window.views.group_tabs.count() == 1


def test_close_mid_run_joins_the_thread_quickly(qtbot, window, fake_factory, fake_model, qtlog):
    fake_factory.configure = lambda e: setattr(e, "hold_at_step", 3)
    load(qtbot, window, fake_model)
    window.run()
    qtbot.waitUntil(fake_factory.engine.held.is_set, timeout=5000)
    started = time.monotonic()
    window.close()
    assert time.monotonic() - started < 2.0
    assert not window.runs.host.thread.isRunning()
    assert fake_factory.engine.closed
    assert not [r for r in qtlog.records if "QThread" in r.message]


def test_close_mid_run_in_a_process_prints_no_qt_warning(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from PySide6.QtCore import QSettings, QTimer
        from PySide6.QtWidgets import QApplication
        from fake_engine import FakeEngine
        from explorer.gui.window.main_window import MainWindow

        app = QApplication([])
        engines = []
        def factory(path, n_gpu_layers=None, n_ctx=None, exact=True):
            engine = FakeEngine("fake:model")
            engine.hold_at_step = 2
            engines.append(engine)
            return engine
        settings = QSettings({str(tmp_path / 's.ini')!r}, QSettings.Format.IniFormat)
        window = MainWindow(factory, settings=settings, show_error=print, recovery_dir={str(tmp_path)!r},
                            discover=None)
        window.show()
        window.model_ready.connect(lambda info: window.run())
        def poll():
            if engines and engines[0].held.is_set():
                window.close()
                app.quit()
            else:
                QTimer.singleShot(5, poll)
        poll()
        window.load_model("fake:model")
        app.exec()
        print("exited", window.runs.host.thread.isRunning())
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert proc.returncode == 0, proc.stderr
    assert "exited False" in proc.stdout
    assert "QThread" not in proc.stderr and "Traceback" not in proc.stderr


def test_bad_model_shows_a_dialog_and_the_app_goes_on(qtbot, window, dialogs, bad_model, fake_model):
    window.controls.set_queries(["my carefully typed query"])
    with qtbot.waitSignal(window.model_load_failed, timeout=5000):
        window.load_model(str(bad_model))
    assert dialogs.errors and dialogs.errors[-1][0] == "Cannot load the model"
    assert "not a GGUF" in dialogs.errors[-1][1]
    assert window.model_info is None and window.run() is None  # no model: a dialog, no crash
    assert dialogs.errors[-1][0] == "No model"
    assert [q.text for q in window.controls.queries()] == ["my carefully typed query"]
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window)
    assert window.session.header("q0").query == "my carefully typed query"


def test_engine_failure_mid_run_shows_a_dialog_and_keeps_tokens(qtbot, window, fake_factory, fake_model, dialogs):
    fake_factory.configure = lambda e: setattr(e, "fail_at_step", 4)
    load(qtbot, window, fake_model)
    assert run_to_end(qtbot, window, k=2) == [False, True]
    assert dialogs.errors[-1][0] == "The run failed" and "step 4" in dialogs.errors[-1][1]
    assert [len(r.tokens) for r in window.session.group("q0").rollouts] == [4, 4]


def test_engine_is_never_touched_from_the_gui_thread(qtbot, window, fake_factory, fake_model, main_thread_id):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=2)
    with qtbot.waitSignal(window.run_done, timeout=5000):
        window.request_branch("q0", "q0.r0", 2, None)
    with qtbot.waitSignal(window.runs.host.scores_ready, timeout=5000):
        window.request_score("q0", [" Atlantic Ocean"])
    window.close()
    names = {name for name, _ in fake_factory.engine.calls}
    assert {"__init__", "generate", "branch", "score", "close", "decode"} <= names
    assert main_thread_id not in fake_factory.engine.threads()


def test_branch_adds_rollouts_to_the_group(qtbot, window, fake_model):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=2, max_tokens=10)
    parent = window.session.rollout("q0.r1")
    with qtbot.waitSignal(window.run_done, timeout=5000):
        window.request_branch("q0", "q0.r1", 3, 1)  # force " Atlantic" at position 3
    rollouts = window.session.group("q0").rollouts
    assert [r.id for r in rollouts] == ["q0.r0", "q0.r1", "q0.r2", "q0.r3"]
    for r in rollouts[2:]:
        assert r.parent_id == "q0.r1" and r.branch_position == 3
        assert r.token_ids[:4] == parent.token_ids[:3] + (1,)
    assert len(window.views.panes.panes()) == 4
    if window.views.tree_view is not None:
        assert set(window.views.tree_view.tree.rollout_ids) == {r.id for r in rollouts}


def test_scoring_shows_scores_for_the_group(qtbot, window, fake_model):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=1)
    window.request_score("q0", [" Atlantic Ocean", " Pacific Ocean"])
    qtbot.waitUntil(lambda: len(window.session.group("q0").scores) == 2, timeout=5000)
    scores = window.session.group("q0").scores
    assert [s.response for s in scores] == [" Atlantic Ocean", " Pacific Ocean"]
    assert window.views.scoring.table.rowCount() == 2


def test_export_then_open_shows_the_same(qtbot, make_window, fake_model, tmp_path, dialogs):
    window = make_window()
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=3, max_tokens=15)
    window.request_score("q0", [" Atlantic Ocean"])
    qtbot.waitUntil(lambda: len(window.session.group("q0").scores) == 1, timeout=5000)
    path = tmp_path / "set.json"
    assert window.files.export_rollout_set(str(path))
    original = window.session.rollout_set()
    texts = pane_texts(window)

    def no_engine(*_args, **_kwargs):
        raise AssertionError("opening a rollout set must not load a model")

    viewer = make_window(factory=no_engine)
    assert viewer.files.open_rollout_set(str(path))
    assert viewer.model_info is None and viewer.session.source == str(path)
    assert viewer.session.groups() == original.groups
    assert pane_texts(viewer) == texts
    assert [s.response for s in viewer.session.group("q0").scores] == [" Atlantic Ocean"]
    assert viewer.views.scoring.table.rowCount() == 1
    assert str(path.absolute()) in viewer.files.recent_files()
    assert not dialogs.errors


def test_drop_a_json_opens_it_and_a_malformed_one_shows_a_dialog(qtbot, window, fake_model, tmp_path, dialogs):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=2)
    good = tmp_path / "good.json"
    window.files.export_rollout_set(str(good))
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "rollout-explorer/rollout-set", "version": 1, "groups": [')

    def drop(path: Path) -> None:
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(path))])
        window.dropEvent(QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                    Qt.KeyboardModifier.NoModifier))

    drop(bad)
    assert dialogs.errors[-1][0] == "Cannot open the rollout set" and "bad.json" in dialogs.errors[-1][1]
    assert window.session.source is None and window.views.group_tabs.count() == 2  # the run is still shown
    drop(good)
    assert window.session.source == str(good) and window.views.group_tabs.count() == 2


def test_settings_persist_to_the_given_location(qtbot, make_window, fake_model, gui_settings):
    first = make_window()
    load(qtbot, first, fake_model)
    c = first.controls
    c.set_queries(["alpha", "beta", "gamma"])
    c.k_spin.setValue(7)
    c.temperature.setValue(0.7)
    c.seed.setValue(4242)
    c.stop_edit.setText(r"\n\n,###")
    c.system_edit.setPlainText("Be brief.")
    c.reference_box.set_choice("system", "Answer in French.")  # a draft: kept, used only once Use is pressed
    first.views.options.set_shading("entropy")
    first.views.options.set_beta(0.25)
    first.close()
    second = make_window()
    c2 = second.controls
    assert c2.reference_box.spec() == "system:Answer in French." and second.runs.reference_policy.in_use is None
    assert second.views.options.shading == "entropy" and second.views.options.beta == 0.25
    assert [q.text for q in c2.queries()] == ["alpha", "beta", "gamma"]
    assert c2.k() == 7 and c2.system_prompt() == "Be brief."
    p = c2.sampling_params()
    assert (p.temperature, p.seed, p.stop) == (0.7, 4242, ("\n\n", "###"))
    assert second.window_settings.startup_model() == str(fake_model)
    assert Path(gui_settings.fileName()).is_file()


def test_autosave_during_a_run_and_recovery_on_next_start(qtbot, make_window, fake_factory, fake_model, tmp_path,
                                                         dialogs):
    fake_factory.configure = lambda e: (setattr(e, "hold_at_step", 8), setattr(e, "step_delay", 0.01))
    window = make_window()
    load(qtbot, window, fake_model)
    window.controls.k_spin.setValue(2)
    window.run()
    qtbot.waitUntil(fake_factory.engine.held.is_set, timeout=5000)
    qtbot.waitUntil(lambda: window.drain() or window.session.tokens_done > 0, timeout=5000)
    window.files.autosave()
    window.files.recovery.flush()
    saved = window.files.recovery.load()
    # what streamed so far, the unfinished rollouts marked cancelled
    assert {r.finish_reason for g in saved.groups for r in g.rollouts} == {"cancelled"}
    assert sum(len(r.tokens) for g in saved.groups for r in g.rollouts) == window.session.tokens_done > 0
    # a crash leaves the file behind; keep a copy before this window's clean close removes it
    leftover = saved
    window.close()
    assert not window.files.recovery.path.exists()

    store = RecoveryStore(tmp_path / "recovery")
    store.save_async(leftover).result(5)
    store.close()
    restored = make_window()
    assert restored.files.offer_recovery()
    assert dialogs.questions and "Recover" in dialogs.questions[-1][0]
    assert restored.session.groups() == Session.from_set(leftover).groups()
    assert restored.views.group_tabs.count() == 2
    restored.files.recovery.flush()
    assert restored.files.recovery.path.exists()  # the only copy of the recovered rollouts until they are exported


def test_clean_finish_clears_the_recovery_file(qtbot, window, fake_model):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=2)
    window.files.autosave()  # as if the timer fired just before the end
    window.files.recovery.flush()
    assert window.files.recovery.path.exists()
    run_to_end(qtbot, window, k=2)
    window.files.recovery.flush()
    assert not window.files.recovery.path.exists()


def test_scripted_mode_saves_screenshot_and_rollout_set(qtbot, fake_factory, fake_model, gui_settings, tmp_path):
    import types

    from explorer.gui.app import run_gui

    args = types.SimpleNamespace(model=str(fake_model), queries=[OCEAN], k=3, max_tokens=8, seed=5, run=True,
                                 screenshot=str(tmp_path / "shot.png"), export=str(tmp_path / "set.json"), quit=True,
                                 n_gpu_layers=None, n_ctx=None)
    assert run_gui(args, fake_factory, gui_settings) == 0
    assert (tmp_path / "shot.png").stat().st_size > 10_000
    rollout_set = export.load(tmp_path / "set.json")
    assert [g.query for g in rollout_set.groups] == [OCEAN]
    assert [r.seed for r in rollout_set.groups[0].rollouts] == [5, 6, 7]


def test_scripted_mode_fails_with_a_message_on_a_bad_model(fake_factory, bad_model, gui_settings, tmp_path, capsys):
    import types

    from explorer.gui.app import run_gui

    args = types.SimpleNamespace(model=str(bad_model), queries=["q"], k=1, max_tokens=4, seed=0, run=True,
                                 screenshot=None, export=str(tmp_path / "x.json"), quit=True)
    assert run_gui(args, fake_factory, gui_settings) == 1
    assert "not a GGUF" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_tiny_gguf_run_streams_into_k_panes(qtbot, make_window, tiny_gguf, main_thread_id):
    """The real engine (llama.cpp) on a tiny GGUF written by the tests, through the worker thread."""
    from explorer.gui.run.worker import default_engine_factory

    window = make_window(factory=default_engine_factory)
    load(qtbot, window, tiny_gguf)
    assert window.model_info.architecture == "llama"
    window.controls.set_queries(["hello"])
    assert run_to_end(qtbot, window, k=3, max_tokens=6) == [False, False]
    rollouts = window.session.group("q0").rollouts
    assert len(window.views.panes.panes()) == 3 and all(r.tokens for r in rollouts)
    assert [p.view.token_count for p in window.views.panes.panes()] == [len(r.tokens) for r in rollouts]
    assert {r.seed for r in rollouts} == {window.controls.sampling_params().seed + i for i in range(3)}


def test_status_numbers_fit_without_waiting_for_a_relayout(qtbot, window):
    status = window.status
    status.model_label.setText("A very long model name that goes on and on · " * 4)
    status.message("A long message on the left of the status bar " * 3)
    status.rate_label.setText("7 tok/s")
    status.elapsed_label.setText("0.1 s")
    window.resize(1000, 700)
    qtbot.waitUntil(lambda: status.model_label.width() < status.model_label.sizeHint().width())  # squeezed
    # a screenshot may be taken before the status bar lays out again: the labels must already fit any value
    status.rate_label.setText("12,345 tok/s")
    status.elapsed_label.setText("1:02:03")
    for label in (status.rate_label, status.elapsed_label):
        assert label.width() >= label.fontMetrics().horizontalAdvance(label.text())


def test_branch_here_in_the_tree_menu_adds_rollouts_to_the_window(qtbot, window, fake_model):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=2, max_tokens=10)
    window.controls.k_spin.setValue(3)  # the menu branches k rollouts
    tree = window.views.tree_view.tree
    node = tree.paths()[list(tree.rollout_ids).index("q0.r1")][2]  # r1's third token
    action = next(a for a in window.views.tree_view.node_menu(node).actions() if a.data() == "branch")
    assert "3 rollouts" in action.text()
    with qtbot.waitSignal(window.run_done, timeout=5000) as blocker:
        action.trigger()
    assert blocker.args == [False, False]
    parent = window.session.rollout("q0.r1")
    branched = [r for r in window.session.group("q0").rollouts if r.parent_id == "q0.r1"]
    assert [r.id for r in branched] == ["q0.r2", "q0.r3", "q0.r4"]
    assert all(r.branch_position == 3 and r.token_ids[:3] == parent.token_ids[:3] for r in branched)
    assert len(window.views.panes.panes()) == 5 and set(tree.rollout_ids) >= {r.id for r in branched}
    # the status bar's figures are the branch's own: its tokens, not the first run's as well
    branch_run = window.session.runs[-1]
    assert branch_run.is_branch and window.status.progress.format() == f"{branch_run.tokens_done:,} tokens"


def test_a_bug_in_the_engine_shows_its_message_and_logs_its_traceback(qtbot, window, fake_factory, fake_model,
                                                                       dialogs, tmp_path, capfd):
    load(qtbot, window, fake_model)
    fake_factory.engine.fail_at_step = 2
    fake_factory.engine.fail_with = ZeroDivisionError("an internal slip")
    window.controls.k_spin.setValue(2)
    with qtbot.waitSignal(window.run_done, timeout=5000) as blocker:
        window.run()
    assert blocker.args == [False, True]
    title, message = dialogs.errors[-1]
    assert title == "The run failed" and message == "Engine error: ZeroDivisionError: an internal slip"
    err = capfd.readouterr().err
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError: an internal slip" in err
    log = (tmp_path / "recovery" / "errors.log").read_text()  # the app's data folder (where recovery lives)
    assert "ZeroDivisionError: an internal slip" in log and "fake_engine.py" in log


def test_garbage_is_collected_on_the_gui_thread_only(qtbot, window):
    """Cyclic garbage holding a Qt object, made unreachable, then many allocations on another thread: the collector
    must not free it there (the engine worker freeing widgets deadlocked against the GUI thread); the GUI thread's
    collector frees it."""
    import gc
    import weakref

    from PySide6.QtCore import QObject

    assert not gc.isenabled()
    freed_on = []

    class Holder:
        pass

    holder = Holder()
    holder.me, holder.qobject = holder, QObject()
    weakref.finalize(holder, lambda: freed_on.append(threading.current_thread().name))
    del holder
    allocator = threading.Thread(target=lambda: [[] for _ in range(200_000)], name="allocator")
    allocator.start()
    allocator.join()
    assert freed_on == []
    kept = [[] for _ in range(5_000)]  # enough new objects for the GUI thread's next check to collect
    qtbot.waitUntil(lambda: bool(freed_on), timeout=5000)
    assert freed_on == [threading.main_thread().name] and kept
