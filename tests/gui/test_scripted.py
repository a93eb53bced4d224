"""Scripted mode (`rollout-explorer gui ... --run --score ... --screenshot ... --export ... --quit`)."""

from __future__ import annotations

import types

from explorer.core.files import export
from explorer.gui.app import run_gui

OCEAN = "Which is the largest ocean?"


def _args(model, tmp_path, **extra):
    base = dict(model=str(model), queries=[OCEAN], k=2, max_tokens=6, seed=1, run=True, score=[],
                screenshot=str(tmp_path / "shot.png"), export=str(tmp_path / "set.json"), quit=True,
                n_gpu_layers=None, n_ctx=None)
    base.update(extra)
    return types.SimpleNamespace(**base)


def test_scripted_scores_are_in_the_export(fake_factory, fake_model, gui_settings, tmp_path):
    args = _args(fake_model, tmp_path, score=["Atlantic Ocean", "Pacific Ocean"])
    assert run_gui(args, fake_factory, gui_settings) == 0
    group = export.load(tmp_path / "set.json").groups[0]
    assert [s.response for s in group.scores] == ["Atlantic Ocean", "Pacific Ocean"]
    assert all(s.tokens for s in group.scores)
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_scripted_without_scores_exports_none(fake_factory, fake_model, gui_settings, tmp_path):
    assert run_gui(_args(fake_model, tmp_path), fake_factory, gui_settings) == 0
    assert export.load(tmp_path / "set.json").groups[0].scores == ()


def test_scripted_tree_screenshot_at_a_readable_size(fake_factory, fake_model, gui_settings, tmp_path):
    from PySide6.QtGui import QImage

    from explorer.gui.app import TREE_SHOT_SIZE

    args = _args(fake_model, tmp_path, k=5, tree_screenshot=str(tmp_path / "tree.png"), tree_heights="model")
    assert run_gui(args, fake_factory, gui_settings) == 0
    image = QImage(str(tmp_path / "tree.png"))
    assert image.width() >= TREE_SHOT_SIZE[0] - 40 and image.height() >= TREE_SHOT_SIZE[1] - 80


def test_scripted_reference_evaluates_the_run_and_the_scores_before_the_export(tiny_gguf, gui_settings, tmp_path):
    from explorer.gui.run.worker import default_engine_factory

    args = _args(tiny_gguf, tmp_path, reference="temperature:0.5", beta=0.2, score=["Atlantic Ocean"])
    assert run_gui(args, default_engine_factory, gui_settings) == 0
    saved = export.load(tmp_path / "set.json")
    assert saved.reference_policy.kind == "temperature" and saved.reference_policy.temperature == 0.5
    group = saved.groups[0]
    assert all(r.mean_kl is not None and r.mean_kl > 0 for r in group.rollouts)
    assert group.scores and group.scores[0].mean_kl is not None


def test_scripted_reference_that_cannot_be_used_fails_with_why(tiny_gguf, gui_settings, tmp_path, capsys):
    from explorer.gui.run.worker import default_engine_factory

    args = _args(tiny_gguf, tmp_path, reference=str(tmp_path / "missing.gguf"))
    assert run_gui(args, default_engine_factory, gui_settings) == 1
    assert "no such GGUF file" in capsys.readouterr().err
    assert not (tmp_path / "set.json").exists()
    args = _args(tiny_gguf, tmp_path, reference="temperature:hot")
    assert run_gui(args, default_engine_factory, gui_settings) == 2
    assert "not a number" in capsys.readouterr().err


def test_the_gui_shading_and_tree_colour_options_offer_every_mode_of_the_window():
    from explorer.cli import build_parser
    from explorer.gui.widgets.style import SHADING_MODES
    from explorer.gui.tree.tree_view import COLOUR_BY

    gui = next(a for a in build_parser()._subparsers._group_actions[0].choices.values() if a.prog.endswith("gui"))
    choices = {a.dest: tuple(a.choices) for a in gui._actions if a.choices}
    assert choices["shading"] == SHADING_MODES and choices["tree_colour"] == COLOUR_BY
