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
