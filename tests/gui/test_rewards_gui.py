"""Rewards in the window with the fake engine: the reward picker, advantages in the pane headers, failing user rewards,
the statistics panel, sorting, re-applying to an opened set, and the JSON / JSONL exports."""

from __future__ import annotations

import json
import math
import statistics

import pytest
from PySide6.QtWidgets import QStyleOptionViewItem

from explorer.core.files import export
from explorer.core.rl.rewards import normalize_text
from explorer.core.rl.stats import STAT_DESCRIPTIONS
from explorer.gui.window.main_window import MainWindow
import gui_kit
from explorer.gui.side_panel.reward_box import PICK

OCEAN = "Which is the largest ocean?"
CODE = "Can you give me some python code?"


@pytest.fixture
def dialogs(dialogs):
    dialogs.answers["Recover the last run?"] = False  # never take a recovery file
    return dialogs


def run_to_end(qtbot, window: MainWindow, fake_model, k: int = 4, max_tokens: int = 12) -> None:
    """Both queries, the fake model loaded first if need be."""
    if window.model_info is None:
        gui_kit.load(qtbot, window, fake_model)
    gui_kit.run_to_end(qtbot, window, k, max_tokens, queries=[OCEAN, CODE])


def pick(box, key: str) -> None:
    """Choose a combo entry as a user does (activated is emitted for every user pick, also of the current one)."""
    index = box.combo.findData(key)
    assert index >= 0, key
    box.combo.setCurrentIndex(index)
    box.combo.activated.emit(index)


def rollouts_of(window: MainWindow, gid: str):
    return window.session.group(gid).rollouts


def write_reward_file(tmp_path, body: str, name: str = "my_reward.py"):
    path = tmp_path / name
    path.write_text(body)
    return path


def test_length_reward_fills_headers_advantages_stats_and_export(qtbot, window, fake_model, tmp_path, dialogs):
    window.controls.reward_box.set_spec("length")
    run_to_end(qtbot, window, fake_model)
    for gid in ("q0", "q1"):
        window.views.select_group(gid)
        rollouts = rollouts_of(window, gid)
        rewards = [r.reward for r in rollouts]
        assert rewards == [-len(r.text.strip()) / 100 for r in rollouts]
        advantages = [r.advantage for r in rollouts]
        assert math.fsum(advantages) == pytest.approx(0.0, abs=1e-9)
        if len(set(rewards)) > 1:  # divided by the std: the advantages have unit spread
            assert statistics.pstdev(advantages) == pytest.approx(1.0, abs=1e-3)
        panes = window.views.panes.panes()
        assert len(panes) == 4
        for pane in panes:
            header = pane.stats.text()
            assert f"R&nbsp;{pane.final.reward:.3g}" in header and f"A&nbsp;{pane.final.advantage:+.3g}" in header
    assert "length" in window.reward_status.text() and "failed" not in window.reward_status.text()

    path = tmp_path / "set.json"
    assert window.files.export_rollout_set(str(path))
    data = json.loads(path.read_text())
    for group in data["groups"]:
        assert all(isinstance(r["reward"], float) and isinstance(r["advantage"], float) for r in group["rollouts"])
        texts = [r["text"] for r in group["rollouts"]]
        assert group["stats"]["distinct_responses"] == len(set(texts))
        assert group["stats"]["mean_reward"] == pytest.approx(statistics.fmean(-len(t.strip()) / 100 for t in texts))
    assert not dialogs.errors


def test_std_option_and_no_reward_reapply_to_the_shown_run(qtbot, window, fake_model):
    box = window.controls.reward_box
    box.set_spec("length")
    run_to_end(qtbot, window, fake_model)
    box.std_check.setChecked(False)  # A = r - mean
    for gid in ("q0", "q1"):
        rollouts = rollouts_of(window, gid)
        mean = statistics.fmean(r.reward for r in rollouts)
        assert [r.advantage for r in rollouts] == pytest.approx([r.reward - mean for r in rollouts])
    box.set_spec("none")
    for gid in ("q0", "q1"):
        group = window.session.group(gid)
        assert all(r.reward is None and r.advantage is None for r in group.rollouts)
        names = dict(group.stats)
        assert "mean_reward" not in names and names["distinct_responses"] >= 1  # diversity stats stay
    assert all("R&nbsp;" not in p.stats.text() for p in window.views.panes.panes())
    assert not window.reward_status.isVisible()


def test_a_reward_file_that_raises_or_returns_nan_gives_null_rewards_and_a_visible_message(
        qtbot, window, fake_model, tmp_path, dialogs):
    path = write_reward_file(tmp_path, (
        "def reward(query, response, reference):\n"
        "    if 'ocean' in query:\n"
        "        raise ValueError('boom')\n"
        "    return float('nan') if len(response) % 2 else float(len(response))\n"))
    window.controls.reward_box.set_spec(str(path))
    run_to_end(qtbot, window, fake_model)
    ocean = rollouts_of(window, "q0")
    assert all(r.reward is None and r.advantage is None and "ValueError: boom" in r.reward_error for r in ocean)
    code = rollouts_of(window, "q1")
    for r in code:
        if len(r.text) % 2:
            assert r.reward is None and "not a finite number" in r.reward_error
        else:
            assert r.reward == float(len(r.text)) and r.reward_error is None
    failed = len(ocean) + sum(1 for r in code if len(r.text) % 2)
    # visible: the pane headers, a permanent count in the status bar, and the status message
    window.views.select_group("q0")
    for pane in window.views.panes.panes():
        assert "reward error" in pane.stats.text() and "boom" in pane.stats.toolTip()
    assert window.views.stats_panel.note.text().startswith(f"{len(ocean)} of {len(ocean)} rewards failed")
    assert f"{failed} failed" in window.reward_status.text()
    assert "boom" in window.reward_status.toolTip()
    message = window.statusBar().currentMessage()
    assert message.startswith(f"{failed} rewards failed") and "boom" in message
    assert not dialogs.errors
    run_to_end(qtbot, window, fake_model, k=2)  # the app goes on
    assert len(window.views.panes.panes()) == 2


def test_a_reward_file_without_reward_shows_the_error_and_falls_back_to_none(qtbot, window, tmp_path, dialogs):
    box = window.controls.reward_box
    box.set_spec("length")
    path = write_reward_file(tmp_path, "def score(query, response, reference):\n    return 1.0\n")
    box.file_picker = lambda _parent: str(path)
    pick(box, PICK)  # "Python file…", as a user picks it
    assert dialogs.errors and dialogs.errors[-1][0] == "Cannot use this reward"
    assert "does not define reward" in dialogs.errors[-1][1]
    assert box.spec() == "none" and box.reward_fn() is None and box.combo.currentData() == "none"

    good = write_reward_file(tmp_path, "def reward(query, response, reference):\n    return 1.0\n", "good.py")
    box.file_picker = lambda _parent: str(good)
    pick(box, PICK)
    assert box.spec() == str(good) and box.combo.currentText() == "good.py"
    box.file_picker = lambda _parent: None  # a cancelled dialog keeps the choice
    pick(box, PICK)
    assert box.spec() == str(good) and box.combo.currentData() == str(good)
    assert len(dialogs.errors) == 1


def test_stats_panel_follows_the_query_tab(qtbot, window, fake_model):
    run_to_end(qtbot, window, fake_model, k=5)
    panel = window.views.stats_panel
    for gid in ("q1", "q0"):
        window.views.select_group(gid)
        texts = [r.text for r in rollouts_of(window, gid)]
        assert panel.group_id == gid
        assert panel.value("distinct_responses") == len(set(texts))
        assert panel.text("distinct_responses") == f"{len(set(texts))} of 5"
        assert panel.text("mean_reward") == "—" and not panel.value_labels["mean_reward"].isEnabled()
    for name in ("distinct_1", "mean_first_divergence", "branch_mass_coverage"):
        assert panel.value_labels[name].toolTip() == STAT_DESCRIPTIONS[name]
    window.controls.reward_box.set_spec("length")  # re-applied: the panel shows the rewards at once
    assert panel.value("mean_reward") == pytest.approx(statistics.fmean(r.reward for r in rollouts_of(window, "q0")))
    assert panel.value_labels["mean_reward"].isEnabled()


def test_sort_by_reward_orders_the_panes(qtbot, window, fake_model):
    window.controls.reward_box.set_spec("length")
    run_to_end(qtbot, window, fake_model, k=6, max_tokens=16)
    window.views.panes.set_sort("reward")
    rewards = [p.final.reward for p in window.views.panes.panes()]
    assert rewards == sorted(rewards, reverse=True)
    window.views.panes.set_sort("advantage")
    advantages = [p.final.advantage for p in window.views.panes.panes()]
    assert advantages == sorted(advantages, reverse=True)


def test_branch_joins_the_group_and_is_rewarded(qtbot, window, fake_model):
    window.controls.reward_box.set_spec("length")
    run_to_end(qtbot, window, fake_model, k=2, max_tokens=10)
    with qtbot.waitSignal(window.run_done, timeout=5000):
        window.request_branch("q0", "q0.r1", 3, None)
    rollouts = rollouts_of(window, "q0")
    assert len(rollouts) == 4
    assert [r.reward for r in rollouts] == [-len(r.text.strip()) / 100 for r in rollouts]  # branched too
    # the baseline is over the i.i.d. rollouts: the branched ones (another distribution) get no advantage
    iid, branched = rollouts[:2], rollouts[2:]
    assert all(r.advantage is None for r in branched) and all(r.advantage is not None for r in iid)
    assert math.fsum(r.advantage for r in iid) == pytest.approx(0.0, abs=1e-9)
    stats = dict(window.session.group("q0").stats)
    assert stats["n_rollouts"] == 4 and stats["mean_reward"] == pytest.approx(math.fsum(r.reward for r in iid) / 2)
    assert window.views.stats_panel.value("n_rollouts") == 4
    assert "over the 2 i.i.d. rollouts; 2 branched or cancelled kept out" in window.views.stats_panel.note.text()


def test_reference_answer_edit_and_reapply_on_an_opened_set(qtbot, make_window, fake_model, tmp_path, dialogs):
    window = make_window()
    window.controls.reward_box.set_spec("length")
    run_to_end(qtbot, window, fake_model)
    # the reference is typed for the selected query in the editor; runs carry it into the groups
    editor = window.controls.query_editor
    editor.list.setCurrentRow(0)
    editor.answer_edit.setText("")
    qtbot.keyClicks(editor.answer_edit, "the")
    assert editor.queries()[0].reference_answer == "the" and editor.queries()[1].reference_answer is None
    option = QStyleOptionViewItem()
    editor.list.itemDelegate().initStyleOption(option, editor.list.model().index(0, 0))
    assert option.text == f"{OCEAN}  ⇒ the"  # the list shows it too
    with qtbot.waitSignal(window.run_done, timeout=10000):
        window.run()
    path = tmp_path / "set.json"
    assert window.files.export_rollout_set(str(path))
    saved = export.load(path)

    viewer = make_window(factory=lambda *a, **k: pytest.fail("opening a set must not load a model"))
    box = viewer.controls.reward_box
    box.set_spec("contains")
    assert viewer.files.open_rollout_set(str(path))
    assert viewer.session.groups() == saved.groups  # a set with rewards keeps them, whatever the choice
    pick(box, "contains")  # picking the reward again re-scores the opened set
    ocean = rollouts_of(viewer, "q0")
    assert viewer.session.group("q0").reference_answer == "the"
    assert [r.reward for r in ocean] == [float("the" in normalize_text(r.text)) for r in ocean]
    code = rollouts_of(viewer, "q1")  # no reference: null rewards, said so
    assert all(r.reward is None and "needs a reference" in r.reward_error for r in code)
    assert f"{len(code)} failed" in viewer.reward_status.text()

    box.set_spec("none")  # a set saved without rewards gets the reward chosen when it is opened
    plain = tmp_path / "plain.json"
    assert viewer.files.export_rollout_set(str(plain))
    assert all(r["reward"] is None for g in json.loads(plain.read_text())["groups"] for r in g["rollouts"])
    box.set_spec("length")
    assert viewer.files.open_rollout_set(str(plain))
    assert all(r.reward == -len(r.text.strip()) / 100 for g in viewer.session.groups() for r in g.rollouts)


def test_jsonl_export_from_the_window(qtbot, window, fake_model, tmp_path, dialogs):
    window.controls.reward_box.set_spec("length")
    run_to_end(qtbot, window, fake_model, k=3)
    path = tmp_path / "out.jsonl"
    assert window.files.export_jsonl(str(path))
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    expected = {r.id: r for g in window.session.groups() for r in g.rollouts}
    assert len(lines) == len(expected) == 6
    for rec in records:
        r = expected[rec["rollout_id"]]
        assert rec["group_id"] == rec["rollout_id"].split(".")[0]
        assert rec["completion"] == r.text and rec["completion_token_ids"] == list(r.token_ids)
        assert rec["reward"] == r.reward and rec["advantage"] == r.advantage
    assert window.menu_actions["export_jsonl"].isEnabled()
    assert not dialogs.errors


def test_reward_choice_persists_in_the_settings(qtbot, make_window, tmp_path):
    path = write_reward_file(tmp_path, "def reward(query, response, reference):\n    return 0.5\n")
    first = make_window()
    first.controls.reward_box.set_spec(str(path))
    first.controls.reward_box.std_check.setChecked(False)
    first.close()
    second = make_window()
    box = second.controls.reward_box
    assert box.spec() == str(path) and box.reward_fn()("q", "r", None) == 0.5 and not box.normalize_std()
    box.set_spec("regex")
    second.close()
    assert make_window().controls.reward_box.spec() == "regex"


def test_scripted_gui_with_a_reward_and_a_query_file(fake_factory, fake_model, gui_settings, tmp_path, capsys):
    import types

    from explorer.gui.app import run_gui

    queries = tmp_path / "queries.json"
    queries.write_text(json.dumps([{"query": OCEAN, "reference": "ocean"}]))
    args = types.SimpleNamespace(model=str(fake_model), queries=[CODE], queries_file=str(queries), reward="contains",
                                 no_std=True, k=3, max_tokens=10, seed=1, run=True, screenshot=None,
                                 export=str(tmp_path / "set.json"), quit=True)
    assert run_gui(args, fake_factory, gui_settings) == 0
    groups = export.load(tmp_path / "set.json").groups
    assert [(g.query, g.reference_answer) for g in groups] == [(CODE, None), (OCEAN, "ocean")]
    ocean = groups[1].rollouts
    rewards = [float("ocean" in normalize_text(r.text)) for r in ocean]
    assert [r.reward for r in ocean] == rewards
    assert [r.advantage for r in ocean] == pytest.approx([x - statistics.fmean(rewards) for x in rewards])
    assert all(r.reward is None and "needs a reference" in r.reward_error for r in groups[0].rollouts)

    args.reward = str(tmp_path / "missing.py")
    assert run_gui(args, fake_factory, gui_settings) == 2
    assert "missing.py does not exist" in capsys.readouterr().err


def test_a_reference_typed_after_the_run_applies_to_the_rollouts_shown(qtbot, window, fake_model):
    window.controls.reward_box.set_spec("contains")
    run_to_end(qtbot, window, fake_model, k=3, max_tokens=10)
    assert all(r.reward is None and "needs a reference" in r.reward_error for r in rollouts_of(window, "q0"))
    editor = window.controls.query_editor
    editor.list.setCurrentRow(0)
    qtbot.keyClicks(editor.answer_edit, "the")
    qtbot.waitUntil(lambda: all(r.reward is not None for r in rollouts_of(window, "q0")), timeout=3000)
    ocean = rollouts_of(window, "q0")
    assert window.session.group("q0").reference_answer == "the"
    assert [r.reward for r in ocean] == [float("the" in normalize_text(r.text)) for r in ocean]
    assert all(r.reward is None for r in rollouts_of(window, "q1"))  # the other query still has none
