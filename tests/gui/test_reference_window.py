"""The reference policy in the window: chosen in the side panel, built and evaluated on the worker thread with the
real engine on tiny GGUFs, shown on the rollouts, cleared, refused with a clear message, kept in exported sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_gguf import write_q8_copy, write_scaled_row_copy, write_tiny_gguf

from explorer.core.reference.exact_copy import DATA_DIR_ENV
from explorer.gui.run.worker import default_engine_factory
from explorer.gui.tree.tree_view import COLOUR_BY
from gui_kit import load, run_to_end


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """base: a tiny GGUF with its own output matrix; changed: its output row 120 scaled (same vocabulary);
    other: a tiny GGUF with another vocabulary; q8: base quantized to Q8_0 (an exact copy makes sense for it)."""
    folder = tmp_path_factory.mktemp("ref-window")
    base = write_tiny_gguf(folder / "base.gguf", tie_embeddings=False, seed=3)
    changed = write_scaled_row_copy(base, folder / "changed.gguf", 120, 4.0)
    q8 = write_q8_copy(base, folder / "q8.gguf")
    other = write_tiny_gguf(folder / "other.gguf", extra_tokens=["zebra"], tie_embeddings=False, seed=3)
    return {"base": base, "changed": changed, "other": other, "q8": q8}


@pytest.fixture
def real_window(make_window, qtbot, models):
    window = make_window(factory=default_engine_factory)
    load(qtbot, window, models["base"])
    window.controls.set_queries(["Which is the largest ocean?"])
    return window


def use_reference(qtbot, window, kind: str, value: str = "") -> None:
    """Press Use in the side panel and wait until the reference is in use and the set shown is evaluated."""
    box = window.controls.reference_box
    box.set_choice(kind, value)
    with qtbot.waitSignal(window.runs.reference_policy.changed, timeout=10000):
        assert box.use()
    qtbot.waitUntil(lambda: not window.runs.reference_policy.is_evaluating(), timeout=10000)


def refusal(qtbot, window, kind: str, value: str) -> str:
    """Press Use on a reference the worker refuses; the message the user was shown."""
    errors = []
    window.error_shown.connect(lambda title, message: errors.append(message))
    window.controls.reference_box.set_choice(kind, value)
    with qtbot.waitSignal(window.runs.reference_policy.failed, timeout=10000):
        window.controls.reference_box.use()
    return errors[-1]


def all_tokens(window):
    return [t for g in window.session.groups() for r in g.rollouts + g.scores for t in r.tokens]


def test_a_reference_chosen_after_a_run_evaluates_the_rollouts_shown(qtbot, real_window, models, tmp_path):
    window = real_window
    run_to_end(qtbot, window, k=3, max_tokens=8)
    assert all(t.kl is None for t in all_tokens(window))
    use_reference(qtbot, window, "model", str(models["changed"]))
    info = window.runs.reference_policy.in_use
    assert info.kind == "model" and "changed" in info.description
    assert window.session.reference_policy == info
    tokens = all_tokens(window)
    assert tokens and all(t.kl is not None and t.kl > 0 and t.ref_top for t in tokens)
    rollouts = window.session.group("q0").rollouts
    assert all(r.log_ratio is not None and r.mean_kl > 0 for r in rollouts)
    assert dict(window.session.group("q0").stats)["mean_kl"] > 0
    assert "In use" in window.controls.reference_box.state_label.text()
    assert window.files.export_rollout_set(str(tmp_path / "set.json"))
    saved = json.loads((tmp_path / "set.json").read_text())
    assert saved["reference_policy"]["kind"] == "model"
    assert all("kl" in t and "ref_top_logprobs" in t for r in saved["groups"][0]["rollouts"] for t in r["tokens"])


def test_a_reference_in_use_evaluates_each_run_and_each_scored_response(qtbot, real_window):
    window = real_window
    use_reference(qtbot, window, "temperature", "0.5")
    assert window.runs.reference_policy.in_use.temperature == 0.5
    run_to_end(qtbot, window, k=2, max_tokens=6)
    # followed while sampling: the facts came with the tokens, nothing is left to evaluate after the run
    assert all(t.kl is not None for t in all_tokens(window)) and not window.runs.reference_policy.is_evaluating()
    with qtbot.waitSignal(window.reference_evaluated, timeout=10000):
        assert window.request_score("q0", ["Atlantic"]) is not None
    scores = window.session.scores("q0")
    assert scores and scores[0].mean_kl is not None and scores[0].log_ratio is not None
    # the same run again under the policy itself (temperature 1): every log-ratio and KL is exactly 0
    use_reference(qtbot, window, "temperature", "1")
    assert all(t.kl == 0.0 and t.ref_logprob == t.logprob for t in all_tokens(window))


def test_no_reference_clears_the_facts_and_a_bad_one_is_refused_keeping_the_rollouts(qtbot, real_window, models):
    window = real_window
    errors = []
    window.error_shown.connect(lambda title, message: errors.append((title, message)))
    run_to_end(qtbot, window, k=2, max_tokens=6)
    use_reference(qtbot, window, "system", "Answer in French.")
    assert all(t.kl is not None for t in all_tokens(window))
    texts = [r.text for r in window.session.group("q0").rollouts]
    use_reference(qtbot, window, "none")
    assert window.runs.reference_policy.in_use is None and window.session.reference_policy is None
    assert all(t.kl is None for t in all_tokens(window))
    # another vocabulary: refused with the first token that differs; the rollouts stay as they were
    box = window.controls.reference_box
    box.set_choice("model", str(models["other"]))
    with qtbot.waitSignal(window.runs.reference_policy.failed, timeout=10000):
        box.use()
    assert errors and "another vocabulary: token" in errors[-1][1]
    assert window.runs.reference_policy.in_use is None and "None in use" in box.state_label.text()
    assert [r.text for r in window.session.group("q0").rollouts] == texts
    # bad input in the side panel never reaches the worker
    box.set_choice("temperature", "warm")
    assert not box.use()
    assert "not a number" in errors[-1][1]
    box.set_choice("model", "")
    assert not box.use() and "path of the reference GGUF" in errors[-1][1]


def test_the_exact_reference_writes_its_float_copy_once_with_progress(qtbot, make_window, models, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    window = make_window(factory=default_engine_factory)
    load(qtbot, window, models["q8"])
    window.controls.set_queries(["Which is the largest ocean?"])
    run_to_end(qtbot, window, k=2, max_tokens=6)
    progress = []
    window.runs.host.reference_policy_progress.connect(lambda what, done, total: progress.append((what, done, total)))
    use_reference(qtbot, window, "exact")
    copies = list((tmp_path / "data" / "exact-references").glob("*.gguf"))
    assert len(copies) == 1 and window.runs.reference_policy.in_use.kind == "exact"
    writes = [p for p in progress if p[0].startswith("Writing")]
    assert writes and writes[-1][1] == writes[-1][2]  # it reached the end
    kl = np.array([t.kl for t in all_tokens(window)])
    assert (kl > 0).all() and kl.max() < 0.1  # Q8_0 is close to its float copy, and not equal
    # a reload of the same model builds the same reference again, from the cached copy
    mtime = copies[0].stat().st_mtime_ns
    with qtbot.waitSignal(window.runs.reference_policy.changed, timeout=10000):
        window.reload_model()
    assert window.runs.reference_policy.in_use.kind == "exact" and copies[0].stat().st_mtime_ns == mtime


def test_a_policy_without_logits_rows_is_told_why_it_cannot_have_a_reference(qtbot, window, fake_model):
    """The fake engine, like a server, has no teacher forcing with rows: the reference is refused with why."""
    load(qtbot, window, fake_model)
    assert "needs a local GGUF model" in refusal(qtbot, window, "temperature", "0.5")


def test_choosing_a_reference_without_a_model_says_so(qtbot, make_window):
    window = make_window(factory=default_engine_factory)
    errors = []
    window.error_shown.connect(lambda title, message: errors.append(message))
    box = window.controls.reference_box
    box.set_choice("temperature", "0.5")
    box.use()
    assert "Load the policy's model first" in errors[-1] and window.runs.reference_policy.in_use is None


def test_a_branch_is_followed_too_and_a_forced_token_is_evaluated_after(qtbot, real_window, models):
    window = real_window
    use_reference(qtbot, window, "model", str(models["changed"]))
    run_to_end(qtbot, window, k=2, max_tokens=8)
    with qtbot.waitSignal(window.run_done, timeout=10000):
        assert window.request_branch("q0", "q0.r0", 2, None) is not None
    branched = [r for r in window.session.group("q0").rollouts if r.parent_id == "q0.r0"]
    assert branched and all(t.kl is not None for r in branched for t in r.tokens)
    assert not window.runs.reference_policy.is_evaluating()
    # a forced token is scored, not sampled: the follower does not see it, the evaluation after the run does
    forced = window.session.group("q0").rollouts[1].tokens[1].top[-1].id
    with qtbot.waitSignal(window.run_done, timeout=10000):
        assert window.request_branch("q0", "q0.r1", 1, forced) is not None
    qtbot.waitUntil(lambda: not window.runs.reference_policy.is_evaluating(), timeout=10000)
    rollouts = window.session.group("q0").rollouts
    assert all(t.kl is not None for r in rollouts for t in r.tokens)
    assert any(r.parent_id == "q0.r1" and r.tokens[1].id == forced for r in rollouts)


def test_a_chosen_reference_replaces_the_one_the_set_shown_carries(qtbot, real_window, tmp_path):
    window = real_window
    use_reference(qtbot, window, "temperature", "0.5")
    run_to_end(qtbot, window, k=2, max_tokens=6)
    assert window.files.export_rollout_set(str(tmp_path / "half.json"))
    # another reference is chosen, and other work asks for an evaluation before the worker has answered
    box = window.controls.reference_box
    box.set_choice("temperature", "1")
    with qtbot.waitSignal(window.runs.reference_policy.changed, timeout=10000):
        assert box.use()
        assert window.evaluate_reference() is None  # it waits for the reference on its way
    qtbot.waitUntil(lambda: not window.runs.reference_policy.is_evaluating(), timeout=10000)
    assert window.session.reference_policy.temperature == 1.0
    assert all(t.kl == 0.0 for t in all_tokens(window))
    # an opened set compared with another reference keeps its facts until the user chooses this one for it
    window.files.open_path(str(tmp_path / "half.json"))
    qtbot.waitUntil(lambda: window.session is not None and window.session.source is not None, timeout=10000)
    assert window.session.reference_policy.temperature == 0.5 and not window.runs.reference_policy.is_evaluating()
    assert all(t.kl > 0 for t in all_tokens(window))
    with qtbot.waitSignal(window.runs.reference_policy.changed, timeout=10000):
        assert box.use()
    qtbot.waitUntil(lambda: not window.runs.reference_policy.is_evaluating(), timeout=10000)
    assert window.session.reference_policy.temperature == 1.0
    assert all(t.kl == 0.0 for t in all_tokens(window))


def test_a_server_s_policy_against_a_local_reference(qtbot, make_window, tiny_served, tmp_path, monkeypatch):
    """A real llama_cpp.server samples; pi_ref is the exact float copy of the served GGUF, here. The run is not
    followed (the server's rows never come): its rollouts are evaluated when it ends, with the KL unavailable."""
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    window = make_window(factory=default_engine_factory)
    with qtbot.waitSignal(window.model_ready, timeout=20000):
        window.load_model(tiny_served["url"])
    window.controls.set_queries(["Which is the largest ocean?"])
    window.controls.chat_check.setChecked(False)
    use_reference(qtbot, window, "exact", str(tiny_served["q8"]))
    reference = window.runs.reference_policy.in_use
    assert reference.kind == "exact" and reference.kl_kind == "unavailable"
    with qtbot.waitSignal(window.reference_evaluated, timeout=20000):
        run_to_end(qtbot, window, k=2, max_tokens=6)
    tokens = all_tokens(window)
    assert tokens and all(t.has_reference and t.kl is None for t in tokens)
    panel = window.views.stats_panel
    assert panel.text("mean_kl") == "unavailable" and panel.mismatch_text("kl_exact", 0) == "unavailable"
    assert panel.mismatch_text("kl_k1", 0) not in ("—", "0") and panel.tabs.isTabEnabled(1)
    # the tree offers the log-ratio colouring, not the KL's (grey everywhere would read as "not evaluated")
    items = window.views.tree_view.colour_box.model()
    assert items.item(COLOUR_BY.index("log_ratio")).isEnabled() and not items.item(COLOUR_BY.index("kl")).isEnabled()
    # another cap: the statistics are made again
    window.controls.reference_box.cap_spin.setValue(1.01)
    assert dict(window.session.group("q0").stats)["mismatch.tis_cap"] == 1.01
    assert "(C = 1.01)" in panel.mismatch_text("tis_clip_fraction", 0)
    # what needs the server's rows is refused with why
    assert "runs on a server" in refusal(qtbot, window, "temperature", "0.5")


def test_one_evaluation_at_a_time_and_what_is_left_after_it(qtbot, real_window):
    """An evaluation asked while another goes on waits for it; then what the first could not take (scores typed
    again meanwhile) is evaluated."""
    from dataclasses import replace

    window = real_window
    use_reference(qtbot, window, "temperature", "0.5")
    run_to_end(qtbot, window, k=2, max_tokens=4)
    with qtbot.waitSignal(window.reference_evaluated, timeout=10000):
        assert window.request_score("q0", ["Atlantic"]) is not None
    session, controller = window.session, window.runs.reference_policy
    bare = tuple(replace(s, tokens=tuple(replace(t, ref_logprob=None, kl=None, ref_top_id=None, ref_top=())
                                         for t in s.tokens)) for s in session.scores("q0"))
    session.set_scores("q0", bare)
    assert controller.evaluate() is not None
    session.set_scores("q0", bare + bare)  # typed again before the first evaluation came back
    assert controller.evaluate() is None and controller.is_evaluating()  # it waits for the first
    qtbot.waitUntil(lambda: not controller.is_evaluating(), timeout=10000)
    scores = session.scores("q0")
    assert len(scores) == 2 and all(t.has_reference for s in scores for t in s.tokens)
