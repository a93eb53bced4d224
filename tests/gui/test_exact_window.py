"""Exact logprobs in the window: the side panel's setting reloads the model with or without exact decoding, and
while it is off the model facts and the score panel give the band sampled and scored logprobs may differ by."""

from __future__ import annotations

from fake_engine import FAKE_BAND

from explorer.gui.run.worker import default_engine_factory
from gui_kit import load


def reloaded(qtbot, window, toggle) -> None:
    with qtbot.waitSignal(window.model_ready, timeout=5000):
        toggle()


def test_turning_exact_logprobs_off_reloads_and_shows_the_band_where_scores_are(qtbot, window, fake_factory,
                                                                                fake_model):
    load(qtbot, window, fake_model)
    facts, note = window.controls.facts["logprobs"], window.views.scoring.exactness
    assert window.model_info.exact and facts.text() == "exact: sampled = scored" and note.isHidden()
    reloaded(qtbot, window, lambda: window.controls.exact_check.setChecked(False))
    assert len(fake_factory.engines) == 2 and fake_factory.engines[0].closed
    assert window.model_info.exact is False and window.model_info.logprob_band == FAKE_BAND
    assert facts.text() == f"not exact: up to {FAKE_BAND:.2g} nats apart"
    assert not note.isHidden() and f"{FAKE_BAND:.2g} nats" in note.text()
    reloaded(qtbot, window, lambda: window.controls.exact_check.setChecked(True))
    assert window.model_info.exact and facts.text() == "exact: sampled = scored" and note.isHidden()


def test_the_setting_is_kept_and_the_next_start_loads_with_it(qtbot, make_window, fake_factory, fake_model):
    first = make_window()
    load(qtbot, first, fake_model)
    reloaded(qtbot, first, lambda: first.controls.exact_check.setChecked(False))
    first.close()
    second = make_window()
    assert not second.controls.exact()
    load(qtbot, second, fake_model)
    assert second.model_info.exact is False


def test_a_real_model_loaded_without_exact_decoding_measures_its_band(qtbot, make_window, tiny_gguf):
    window = make_window(factory=default_engine_factory)
    load(qtbot, window, tiny_gguf)
    assert window.model_info.exact and window.model_info.logprob_band is None
    reloaded(qtbot, window, lambda: window.controls.exact_check.setChecked(False))
    assert window.model_info.exact is False and window.model_info.logprob_band is not None
    assert window.controls.facts["logprobs"].toolTip() == window.model_info.exactness()
