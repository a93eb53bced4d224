"""Small things of the window: drop-downs show their texts whole, a model has one name everywhere, and the tree
keeps its width when a reference policy's facts arrive."""

from __future__ import annotations

import dataclasses

from PySide6.QtWidgets import QComboBox

from explorer.core.files import export
from explorer.core.types import ReferenceInfo
from explorer.gui.widgets.combo import fits
from gui_kit import load, run_to_end


def test_the_side_panels_drop_downs_show_every_entry_whole(qtbot, window):
    window.controls.reward_box.show()
    window.controls.reference_box.show()
    for combo in (window.controls.reference_box.combo, window.controls.reward_box.combo):
        for index in range(combo.count()):
            combo.setCurrentIndex(index)
            assert fits(combo, combo.currentText()), combo.currentText()  # the closed box
            widest = max(combo.view().fontMetrics().horizontalAdvance(combo.itemText(i)) for i in range(combo.count()))
            assert combo.view().minimumWidth() >= widest  # the open list


def test_a_model_is_called_by_one_name_in_the_picker_the_status_bar_and_every_message(
        qtbot, make_window, fake_model, dialogs, tmp_path):
    from explorer.core.models.discovery import ModelEntry

    window = make_window(discover=lambda: [ModelEntry(fake_model, "SmolLM2 (as listed)", "models/")])
    qtbot.waitUntil(lambda: window.controls.model_combo.count() == 1, timeout=5000)
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=2, max_tokens=4)
    saved = dataclasses.replace(window.session.rollout_set(),
                                model=dataclasses.replace(window.model_info, name="what the GGUF calls itself"))
    path = tmp_path / "named.json"
    export.save(saved, path)
    window.session.mark_exported()
    assert window.files.open_rollout_set(str(path))
    assert "made with SmolLM2 (as listed)" in window.statusBar().currentMessage()
    assert window.status.model_label.text().startswith("SmolLM2 (as listed)")
    window.files.recovery.save_async(saved).result(5)
    window.files.offer_recovery()
    assert "SmolLM2 (as listed)" in dialogs.questions[-1][1]
    assert "what the GGUF calls itself" not in dialogs.questions[-1][1]


def test_the_tree_keeps_its_width_when_reference_facts_arrive(qtbot, window, fake_model):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=24, max_tokens=6, queries=["Which is the largest ocean?"])
    plain = window.session.rollout_set()
    window.session.mark_exported()
    view = window.views.tree_view
    qtbot.waitUntil(lambda: view.width() > 0.6 * window.width(), timeout=3000)
    widths = []
    for _ in range(3):  # a reference in use, then none, again and again
        groups = tuple(dataclasses.replace(g, rollouts=tuple(dataclasses.replace(r, tokens=tuple(
            dataclasses.replace(t, ref_logprob=t.logprob - 0.5, kl=0.25) for t in r.tokens)) for r in g.rollouts))
            for g in plain.groups)
        window.show_rollout_set(dataclasses.replace(plain, groups=groups, reference_policy=ReferenceInfo(
            "system", "the same model told to be a pirate", "f")), "with-reference.json")
        qtbot.wait(50)
        widths.append(view.width())
        window.show_rollout_set(plain, "plain.json")
        qtbot.wait(50)
        widths.append(view.width())
    assert len(set(widths)) == 1, widths
    for combo in view.findChildren(QComboBox):  # "samplec": the tree's own drop-downs keep their texts
        assert combo.width() >= combo.minimumSizeHint().width()
