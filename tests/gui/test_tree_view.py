"""The token tree view offscreen: hover text, click selection, the branch menu, live growth, collapse, export."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

from kit import node_of
from explorer.core.tree import TokenTree
from explorer.core.types import Rollout, TokenInfo, TopLogprob
from explorer.gui.side_plot import SidePlot
from explorer.gui.tree_view import TokenTreeView

WORDS = {1: " The", 2: " sea", 3: " ocean", 4: " is", 5: " blue", 6: " deep", 7: " vast", 8: "."}


def make_info(prefix: tuple[int, ...], token: int) -> TokenInfo:
    """Probabilities that depend only on the prefix, as a model's do; top-3 alternatives attached."""
    rng = np.random.default_rng(sum((i + 1) * 31 ** k for k, i in enumerate(prefix)) + len(prefix))
    p = dict(zip(WORDS, rng.dirichlet(np.ones(len(WORDS)))))
    ranked = sorted(p, key=lambda t: -p[t])
    top = tuple(TopLogprob(t, WORDS[t], WORDS[t].encode(), math.log(p[t])) for t in ranked[:3])
    entropy = -sum(v * math.log(v) for v in p.values())
    return TokenInfo(token, WORDS[token], WORDS[token].encode(), math.log(p[token]), None, entropy,
                     ranked.index(token) + 1, top)


def make_rollout(index: int, ids: list[int]) -> Rollout:
    tokens = tuple(make_info(tuple(ids[:i]), t) for i, t in enumerate(ids))
    return Rollout(f"q0.r{index}", index, index, "".join(WORDS[t] for t in ids), tokens, "stop")


ROLLOUT_IDS = [[1, 2, 4, 5, 8], [1, 2, 4, 6, 8], [1, 3, 4, 7, 8], [1, 2, 4, 5]]


@pytest.fixture
def tree() -> TokenTree:
    t = TokenTree("q0", "Name a large body of water.")
    for i, ids in enumerate(ROLLOUT_IDS):
        t.add_rollout(make_rollout(i, ids))
    return t


@pytest.fixture
def view(qtbot, tree) -> TokenTreeView:
    v = TokenTreeView()
    qtbot.addWidget(v)
    v.resize(900, 500)
    v.show()
    qtbot.waitExposed(v)
    v.set_tree(tree)
    QApplication.processEvents()
    return v


def viewport_pos(view: TokenTreeView, node: int):
    x, y = view._layout.positions[node]
    scene = view.plot.vb.mapViewToScene(QPointF(float(x), float(y)))
    return view.graphics.mapFromScene(scene)


def test_hovering_a_node_shows_its_numbers(qtbot, view, tree):
    node = node_of(tree, [1, 2])  # " sea": 3 of the 4 rollouts
    qtbot.mouseMove(view.graphics.viewport(), viewport_pos(view, node))
    qtbot.waitUntil(lambda: view.hovered_node == node)
    text = view.hover_text(node)
    assert "sea" in text
    assert f"{math.exp(tree.logprobs[node]):.4f}" in text
    assert "3/4 = 0.750" in text
    assert "rollouts through it: 3" in text
    assert f"{tree.entropies[node]:.3f} nats" in text
    assert f"{tree.cum_logprobs[node]:.3f}" in text
    assert any("sea" in label for label in view.label_texts())  # the hovered node gets a label


def shown_label_boxes(view: TokenTreeView) -> list:
    pool = view.labels
    return [pool._screen_box(item, item.pos().x(), item.pos().y(), tuple(item.anchor))
            for item in pool.items if item.isVisible()]


def test_labels_neither_overlap_nor_cover_the_lane_names(qtbot, view, tree):
    assert "prompt" in view.label_texts()  # room enough at this zoom: above the root, not left of it
    # zoomed far out, the branch labels at depths 0 and 2 and the prompt's would all fall on the same few pixels
    view.plot.vb.setXRange(-1, 400, padding=0)
    qtbot.waitUntil(lambda: len(view.label_texts()) < 3)
    boxes = shown_label_boxes(view)
    area = view.plot.vb.sceneBoundingRect()
    assert boxes and all(area.contains(box) for box in boxes)
    assert not any(a.intersects(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_clicking_a_node_selects_the_rollouts_through_it(qtbot, view, tree):
    node = node_of(tree, [1, 2, 4])
    selected, tokens = [], []
    view.node_selected.connect(lambda *args: selected.append(args))
    view.token_selected.connect(lambda *args: tokens.append(args))
    qtbot.mouseClick(view.graphics.viewport(), Qt.MouseButton.LeftButton, pos=viewport_pos(view, node))
    qtbot.waitUntil(lambda: bool(selected and tokens))
    group, rollouts = selected[0]
    assert group == "q0" and rollouts == ["q0.r0", "q0.r1", "q0.r3"]
    assert tokens == [("q0.r0", 2)]
    assert view.selected_node == node and view.highlighted_rollouts == rollouts
    hx, _ = view.highlight.getData()
    assert len(hx) == 3 + len(ROLLOUT_IDS[0]) + len(ROLLOUT_IDS[1]) + len(ROLLOUT_IDS[3])  # each path from the root


def test_select_token_from_a_pane_selects_its_node(qtbot, view, tree):
    with qtbot.waitSignal(view.node_selected) as blocker:
        view.select_token("q0.r2", 1)
    assert view.selected_node == node_of(tree, [1, 3])
    assert blocker.args == ["q0", ["q0.r2"]]
    view.select_token("q0.r2", 99)  # out of range: ignored, selection kept
    assert view.selected_node == node_of(tree, [1, 3])


def test_branch_menu_forces_a_ghost_token_and_keeps_a_real_prefix(qtbot, view, tree):
    view.set_branch_k(3)
    ghost = next(c for c in tree.children(node_of(tree, [1, 2, 4])) if c.is_ghost)
    menu = view.node_menu(ghost.node)
    action = next(a for a in menu.actions() if a.data() == "branch")
    assert "3 rollouts" in action.text() and "forcing" in action.text()
    with qtbot.waitSignal(view.branch_requested) as blocker:
        action.trigger()
    assert blocker.args == ["q0", "q0.r0", 3, ghost.token_id]  # keep " The sea is", then force the ghost

    real = node_of(tree, [1, 3])
    action = next(a for a in view.node_menu(real).actions() if a.data() == "branch")
    with qtbot.waitSignal(view.branch_requested) as blocker:
        action.trigger()
    assert blocker.args == ["q0", "q0.r2", 2, None]  # keep " The ocean", sample the rest


def test_right_click_opens_the_branch_menu(qtbot, view, tree):
    node = node_of(tree, [1, 3, 4])
    qtbot.mouseClick(view.graphics.viewport(), Qt.MouseButton.RightButton, pos=viewport_pos(view, node))
    qtbot.waitUntil(lambda: QApplication.activePopupWidget() is not None)
    menu = QApplication.activePopupWidget()
    action = next(a for a in menu.actions() if a.data() == "branch")
    with qtbot.waitSignal(view.branch_requested) as blocker:
        action.trigger()
    menu.close()
    assert blocker.args == ["q0", "q0.r2", 3, None]


def drawn(layer) -> set:
    d = layer.scatter.data
    keep = np.isfinite(d["x"])
    return set(zip(d["x"][keep].tolist(), d["y"][keep].tolist(), d["size"][keep].tolist(),
                   [b.color().name(QColor.NameFormat.HexArgb) for b in d["brush"][keep]]))


def sampled_rollouts(n: int, length: int, seed: int) -> list[Rollout]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ids: list[int] = []
        for _ in range(length):
            top = make_info(tuple(ids), 1).top
            # Mostly the most probable token, so rollouts share prefixes and fork now and then.
            ids.append(top[0].id if rng.random() < 0.8 else int(rng.choice(list(WORDS))))
        out.append(make_rollout(i, ids))
    return out


def test_live_growth_draws_the_same_as_a_fresh_view(qtbot, view):
    live = TokenTree("q0", "p")
    view.set_tree(live)
    assert view.refresh() is False  # nothing changed since set_tree
    rollouts = sampled_rollouts(10, 40, seed=5)
    modes = set()
    for p in range(40):
        for r in rollouts:
            live.add_token(r.id, p, r.tokens[p])
        assert view.refresh() is True
        modes.add(view.nodes.last_mode)
        modes.add(view.ghost_nodes.last_mode)
        assert view.refresh() is False
    assert "update" in modes  # the late steps touch only the new and changed points
    # A branch of r0 that takes an alternative at position 20: prefix nodes grow, a ghost turns real.
    r0 = rollouts[0]
    ghost = next(c for c in live.children(live.node_at(r0.id, 19)) if c.is_ghost)
    branch_ids = [t.id for t in r0.tokens[:20]] + [ghost.token_id, 1, 2]
    live.add_rollout(make_rollout(10, branch_ids))
    assert view.refresh() is True
    assert view.nodes.last_mode == view.ghost_nodes.last_mode == "update"
    assert sorted(view.nodes.nodes.tolist()) == np.flatnonzero(~live.ghost_mask).tolist()
    fresh = TokenTreeView()
    qtbot.addWidget(fresh)
    fresh.set_tree(live)
    assert fresh.nodes.last_mode == "full"
    assert drawn(view.nodes) == drawn(fresh.nodes)
    assert drawn(view.ghost_nodes) == drawn(fresh.ghost_nodes)
    assert view.info_label.text().startswith("11 rollouts")
    assert view.info_label.toolTip() == view.info_label.text()  # the whole of it, when the label is elided


def test_collapsed_mode_draws_forks_and_chain_labels(qtbot, view, tree):
    view.set_collapsed(True)
    chains = tree.collapse_chains()
    assert sorted(view.nodes.nodes.tolist()) == sorted(chains.kept.tolist())
    assert not view.ghost_nodes.scatter.isVisible()
    assert any("vast" in label for label in view.label_texts())  # r2's tail " is vast." is one labelled chain
    view.set_collapsed(False)
    assert len(view.nodes.nodes) == int(np.count_nonzero(~tree.ghost_mask))


def test_export_png_and_svg(view, tmp_path):
    view.export_image(tmp_path / "tree.png")
    view.export_image(tmp_path / "tree.svg")
    assert (tmp_path / "tree.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "tree.svg").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        view.export_image(tmp_path / "tree.jpg")


def test_side_plot_follows_the_selected_rollout(qtbot, view, tree):
    side = SidePlot()
    qtbot.addWidget(side)
    side.follow(view)
    assert side.prob_plot.vb.linkedView(0) is view.plot.vb
    view.select_node(node_of(tree, [1, 3]))
    assert side.rollout == "q0.r2"
    series = side.series()
    np.testing.assert_allclose(series["prob"], tree.probs[tree.path("q0.r2")])
    assert len(series["mean_prob"]) == 5
    x, y = side.rollout_entropy.getData()
    np.testing.assert_allclose(y, tree.entropies[tree.path("q0.r2")], rtol=1e-6)
    assert [label for label, _ in side.key_entries()] == ["group mean", "q0.r2"]
    assert "q0.r2" in side.key.text()


def test_side_plot_key_follows_a_palette_change(qtbot, view):
    side = SidePlot()
    qtbot.addWidget(side)
    side.follow(view)
    palette = QPalette(side.palette())
    palette.setColor(QPalette.ColorRole.Base, QColor("#1e1f22"))
    palette.setColor(QPalette.ColorRole.Text, QColor("#e6e6e6"))
    side.setPalette(palette)
    assert 'color:#e6e6e6' in side.key.text()
    assert side.key.palette().color(QPalette.ColorRole.Window) == QColor("#1e1f22")


def test_dark_palette_gives_a_dark_background(qtbot, view):
    palette = QPalette(view.palette())
    palette.setColor(QPalette.ColorRole.Base, QColor("#1e1f22"))
    palette.setColor(QPalette.ColorRole.Text, QColor("#e6e6e6"))
    view.setPalette(palette)
    assert view.graphics.backgroundBrush().color().lightnessF() < 0.3
    assert view._fg.lightnessF() > 0.7
    assert len(view.nodes.nodes) == int(np.count_nonzero(~view.tree.ghost_mask))  # still drawn after the restyle
