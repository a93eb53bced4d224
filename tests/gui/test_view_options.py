"""One ViewOptions the views read: the shading and beta change everywhere at once, and no view keeps a copy."""

from __future__ import annotations

import pytest

from explorer.gui.widgets.tokens import TokenTextView
from explorer.gui.widgets.view_options import ViewOptions
from gui_kit import load, run_to_end


def test_every_view_reads_the_one_shading_and_the_menu_follows(qtbot, window, fake_model):
    load(qtbot, window, fake_model)
    run_to_end(qtbot, window, k=3, max_tokens=6)
    with qtbot.waitSignal(window.runs.score_done, timeout=5000):
        window.request_score("q0", ["Pacific Ocean"])
    views = window.views
    assert views.panes.options is views.options and views.scoring.options is views.options
    assert views.rollout_table.options is views.options
    text_views = [p.view for p in views.panes.panes()] + [views.scoring.table.cellWidget(0, 0)]
    assert all(isinstance(v, TokenTextView) for v in text_views)
    window.menu_actions["shade_entropy"].trigger()
    assert views.options.shading == "entropy"
    assert {v.mode for v in text_views} == {"entropy"} and views.panes.legend.mode == "entropy"
    assert views.panes.shading_box.currentData() == "entropy"
    views.panes.shading_box.setCurrentIndex(views.panes.shading_box.findData("prob"))  # the panes' own box
    assert views.options.shading == "prob" and window.menu_actions["shade_prob"].isChecked()
    assert {v.mode for v in text_views} == {"prob"}


def test_beta_is_one_number_the_box_edits():
    options = ViewOptions()
    seen = []
    options.changed.connect(seen.append)
    options.set_beta(0.5)
    options.set_beta(0.5)  # no change, no signal
    assert options.beta == 0.5 and seen == ["beta"]
    for bad in (0.0, float("nan"), 1e6):
        with pytest.raises(ValueError):
            options.set_beta(bad)
    assert options.beta == 0.5


def test_the_beta_box_and_the_options_stay_one(qtbot, window):
    views = window.views
    views.beta_box.setValue(0.3)
    assert views.options.beta == pytest.approx(0.3)
    views.options.set_beta(0.7)
    assert views.beta_box.value() == pytest.approx(0.7)
