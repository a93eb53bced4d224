"""The token tree as an icicle, offscreen: heights in both modes, fork labels, hover and leave, wheel zoom, click
selection, the branch menu (ghosts included), live growth and refit, colours, export."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QPalette, QTextCursor, QWheelEvent
from PySide6.QtWidgets import QApplication

from explorer.core.tree.token_tree import ROOT, TokenTree
from explorer.core.types import ReferenceInfo, Rollout, TokenInfo, TopLogprob
from explorer.gui.views.side_plot import SidePlot
from explorer.gui.tree.tree_view import COLOUR_BY, TokenTreeView
from explorer.gui.widgets.style import LOG_RATIO_FULL_SCALE, SCALES, SHADE_LEVELS

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
    x0, y0, x1, y1 = view.icicle_layout.box(node)
    scene = view.plot.vb.mapViewToScene(QPointF((x0 + x1) / 2, (y0 + y1) / 2))
    return view.graphics.mapFromScene(scene)


def test_boxes_are_shares_of_the_group_and_switch_to_the_model_mass(view, tree):
    ice = view.icicle_layout
    sea, ocean = tree.node_for([1, 2]), tree.node_for([1, 3])
    assert ice.height[sea] == pytest.approx(0.75) and ice.height[ocean] == pytest.approx(0.25)
    first, second = sorted((sea, ocean), key=lambda n: -tree.logprobs[n])  # the more probable sibling on top
    assert ice.y0[first] == pytest.approx(0.0) and ice.y0[second] == pytest.approx(ice.height[first])
    view.set_mode("model")
    ice = view.icicle_layout
    assert view.mode_box.currentData() == "model"
    the = tree.node_for([1])
    # at the fork after " The", each child's share of its parent is pi(token | prefix)
    assert ice.height[sea] == pytest.approx(ice.height[the] * math.exp(tree.logprobs[sea]))
    assert ice.height[ocean] == pytest.approx(ice.height[the] * math.exp(tree.logprobs[ocean]))
    ghost = next(c.node for c in tree.children(the) if c.is_ghost)
    assert ice.height[ghost] > 0 and len(ice.rest_parent) > 0  # alternatives and the untaken remainder drawn
    with pytest.raises(ValueError, match="unknown tree heights"):
        view.set_mode("exact")


def test_fork_labels_name_the_diverging_tokens_with_pi_and_counts(qtbot, view, tree):
    view.grab()
    the, sea = tree.node_for([1]), tree.node_for([1, 2])
    p_sea, p_ocean = math.exp(tree.logprobs[sea]), math.exp(tree.logprobs[tree.node_for([1, 3])])
    first, second = sorted([("sea", p_sea, 3), ("ocean", p_ocean, 1)], key=lambda t: -t[1])
    expected = " | ".join(f"\u2423{w} {p:.2f} {n}/4".replace("0.", ".", 1) for w, p, n in (first, second))
    assert expected in view.box_texts()
    assert the in view.icicle_layout.forks.tolist()


def test_hovering_a_box_shows_its_numbers_and_leaving_clears_the_ring(qtbot, view, tree):
    node = tree.node_for([1, 2])  # " sea": 3 of the 4 rollouts
    qtbot.mouseMove(view.graphics.viewport(), viewport_pos(view, node))
    qtbot.waitUntil(lambda: view.hovered_node == node)
    assert view.hover_ring.isVisible()
    text = view.hover_text(node)
    assert "sea" in text
    assert f"{math.exp(tree.logprobs[node]):.4f}" in text
    assert "3/4 rollouts here = 0.750" in text
    assert "sampled 0.750" in text and f"model \u03c0(prefix | x) {math.exp(tree.cum_logprobs[node]):.3g}" in text
    assert f"{tree.entropies[node]:.3f} nats" in text
    assert f"{tree.cum_logprobs[node]:.3f}" in text
    assert "prefix:  The sea" in text
    QApplication.sendEvent(view.graphics.viewport(), QEvent(QEvent.Type.Leave))
    assert view.hovered_node == -1 and not view.hover_ring.isVisible()


def wheel(view: TokenTreeView, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    vp = view.graphics.viewport()
    pos = QPointF(vp.width() / 2, vp.height() / 2)
    event = QWheelEvent(pos, QPointF(vp.mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, 120),
                        Qt.MouseButton.NoButton, modifiers, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(vp, event)


def test_wheel_zooms_along_x_and_with_a_modifier_along_y(view):
    (x0, x1), (y0, y1) = view.plot.vb.viewRange()
    wheel(view)
    (nx0, nx1), (ny0, ny1) = view.plot.vb.viewRange()
    assert nx1 - nx0 < x1 - x0 and (ny0, ny1) == (y0, y1)
    wheel(view, Qt.KeyboardModifier.ControlModifier)
    (mx0, mx1), (my0, my1) = view.plot.vb.viewRange()
    assert (mx0, mx1) == (nx0, nx1) and my1 - my0 < ny1 - ny0


def test_clicking_a_box_selects_the_rollouts_through_it(qtbot, view, tree):
    node = tree.node_for([1, 2, 4])
    selected, tokens = [], []
    view.node_selected.connect(lambda *args: selected.append(args))
    view.token_selected.connect(lambda *args: tokens.append(args))
    qtbot.mouseClick(view.graphics.viewport(), Qt.MouseButton.LeftButton, pos=viewport_pos(view, node))
    qtbot.waitUntil(lambda: bool(selected and tokens))
    group, rollouts = selected[0]
    assert group == "q0" and rollouts == ["q0.r0", "q0.r1", "q0.r3"]
    assert tokens == [("q0.r0", 2)]
    assert view.selected_node == node and view.highlighted_rollouts == rollouts
    ring = view.subtree_ring.rect()  # the rollouts through it stay inside its extent up to the longest one's end
    assert ring.left() == 2 and ring.right() == 5 and ring.height() == pytest.approx(0.75)
    view.select_node(-1)
    assert selected[-1] == ("q0", []) and not view.select_ring.isVisible()


def test_select_token_from_a_pane_selects_its_node(qtbot, view, tree):
    with qtbot.waitSignal(view.node_selected) as blocker:
        view.select_token("q0.r2", 1)
    assert view.selected_node == tree.node_for([1, 3])
    assert blocker.args == ["q0", ["q0.r2"]]
    view.select_token("q0.r2", 99)  # out of range: ignored, selection kept
    assert view.selected_node == tree.node_for([1, 3])


def test_branch_menu_forces_a_ghost_token_and_keeps_a_real_prefix(qtbot, view, tree):
    view.branch_k = lambda: 3  # as the side panel's k answers
    ghost = next(c for c in tree.children(tree.node_for([1, 2, 4])) if c.is_ghost)
    menu = view.node_menu(ghost.node)
    action = next(a for a in menu.actions() if a.data() == "branch")
    assert "3 rollouts" in action.text() and "forcing" in action.text()
    with qtbot.waitSignal(view.branch_requested) as blocker:
        action.trigger()
    assert blocker.args == ["q0", "q0.r0", 3, ghost.token_id]  # keep " The sea is", then force the ghost

    real = tree.node_for([1, 3])
    action = next(a for a in view.node_menu(real).actions() if a.data() == "branch")
    with qtbot.waitSignal(view.branch_requested) as blocker:
        action.trigger()
    assert blocker.args == ["q0", "q0.r2", 2, None]  # keep " The ocean", sample the rest


def test_right_click_on_a_ghost_box_offers_to_force_it(qtbot, view, tree):
    view.set_mode("model")
    parent = tree.node_for([1, 3, 4])
    ghost = max((c for c in tree.children(parent) if c.is_ghost), key=lambda c: c.prob)
    view.plot.vb.setXRange(2, 5, padding=0)  # big enough to aim at
    view.plot.vb.setYRange(float(view.icicle_layout.y0[ghost.node]) - 0.01,
                           float(view.icicle_layout.y0[ghost.node] + view.icicle_layout.height[ghost.node]) + 0.01,
                           padding=0)
    QApplication.processEvents()
    qtbot.mouseClick(view.graphics.viewport(), Qt.MouseButton.RightButton, pos=viewport_pos(view, ghost.node))
    qtbot.waitUntil(lambda: QApplication.activePopupWidget() is not None)
    menu = QApplication.activePopupWidget()
    action = next(a for a in menu.actions() if a.data() == "branch")
    with qtbot.waitSignal(view.branch_requested) as blocker:
        action.trigger()
    menu.close()
    assert blocker.args == ["q0", "q0.r2", 3, ghost.token_id]


def boxes(view):
    ice, tree = view.icicle_layout, view.tree
    return sorted((tree.prefix_text(n), bool(ice.ghost[n]), round(float(ice.y0[n]), 9),
                   round(float(ice.height[n]), 9)) for n in range(1, len(tree)))


def _mostly_the_top(top, rng) -> int:
    # Mostly the most probable token, so rollouts share prefixes and fork now and then.
    return top[0].id if rng.random() < 0.8 else int(rng.choice(list(WORDS)))


def sampled_rollouts(n: int, length: int, seed: int, pick=_mostly_the_top) -> list[Rollout]:
    """n rollouts of `length` tokens, each token pick(the top-3 of make_info's policy there, rng)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ids: list[int] = []
        for _ in range(length):
            ids.append(pick(make_info(tuple(ids), 1).top, rng))
        out.append(make_rollout(i, ids))
    return out


def test_live_growth_draws_the_same_as_a_fresh_view_and_refits_after_a_branch(qtbot, view):
    live = TokenTree("q0", "p")
    rollouts = sampled_rollouts(10, 40, seed=5)
    for r in rollouts:
        live.register(r.id)
    view.set_tree(live)
    assert view.refresh() is False  # nothing changed since set_tree
    for p in range(40):
        for r in rollouts:
            live.add_token(r.id, p, r.tokens[p])
        assert view.refresh() is True
        assert view.refresh() is False
    view.plot.vb.setXRange(3, 6, padding=0)  # the user zoomed in
    # A branch of r0 that takes an alternative at position 20: a ghost turns real, and the view refits
    r0 = rollouts[0]
    ghost = next(c for c in live.children(live.node_at(r0.id, 19)) if c.is_ghost)
    live.add_rollout(make_rollout(10, [t.id for t in r0.tokens[:20]] + [ghost.token_id, 1, 2]))
    assert view.refresh() is True
    x0, x1 = view.plot.vb.viewRange()[0]
    assert x0 <= -1 and x1 >= 40
    fresh = TokenTreeView()
    qtbot.addWidget(fresh)
    fresh.set_tree(live)
    assert boxes(view) == boxes(fresh)
    assert view.info_label.text().startswith("11 rollouts")
    assert view.info_label.toolTip() == view.info_label.text()  # the whole of it, when the label is elided


def test_colour_by_entropy_recolours_the_boxes(view, tree):
    before = view.icicle.node_styles.copy()
    view.set_colour_by("entropy")
    assert view.colour_box.currentData() == "entropy"
    assert view.colorbar.levels() == (0, 4.0)
    assert not np.array_equal(before, view.icicle.node_styles)


def test_export_png_and_svg(view, tmp_path):
    view.export_image(tmp_path / "tree.png")
    view.export_image(tmp_path / "tree.svg")
    assert (tmp_path / "tree.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "tree.svg").read_text(encoding="utf-8")
    assert "<svg" in svg and "sea" in svg  # the boxes' text is drawn into it, not a blank plot
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        view.export_image(tmp_path / "tree.jpg")


def test_side_plot_follows_the_selected_rollout(qtbot, view, tree):
    side = SidePlot()
    qtbot.addWidget(side)
    side.follow(view)
    assert side.prob_plot.vb.linkedView(0) is view.plot.vb
    view.select_node(tree.node_for([1, 3]))
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
    assert view.icicle_layout is not None and view.grab().width() > 0  # still drawn after the restyle


# -- a reference policy (issue 11) -----------------------------------------------------------------------------------
# Both policies per prefix (token ids; 1 A, 2 B, 3 C, 4 D, 5 E, 6 F, 7 G): pi and pi_ref agree at the root and after
# "A", differ after "A B" (pi prefers C, pi_ref D), and agree after "A E" (F).
LETTERS = {1: "A", 2: "B", 3: "C", 4: "D", 5: "E", 6: "F", 7: "G"}
PI = {(): {1: 0.9, 5: 0.1}, (1,): {2: 0.6, 5: 0.4}, (1, 2): {3: 0.7, 4: 0.3}, (1, 5): {6: 0.8, 7: 0.2}}
PI_REF = {(): {1: 0.9, 5: 0.1}, (1,): {2: 0.7, 5: 0.3}, (1, 2): {3: 0.35, 4: 0.65}, (1, 5): {6: 0.6, 7: 0.4}}
FINISHED = {0: [1, 2, 3], 1: [1, 2, 4], 3: [1, 5, 6]}  # rollout index -> token ids; r2 streams [1, 5, 7]
STREAMING = [1, 5, 7]


def ranked(dist: dict[int, float]) -> tuple[TopLogprob, ...]:
    return tuple(TopLogprob(t, LETTERS[t], LETTERS[t].encode(), math.log(p))
                 for t, p in sorted(dist.items(), key=lambda item: -item[1]))


def pi_token(prefix: tuple[int, ...], tid: int) -> TokenInfo:
    from kit import tok

    return tok(tid, LETTERS[tid], PI[prefix][tid], top=ranked(PI[prefix]))


def kl_at(prefix: tuple[int, ...]) -> float:
    return sum(p * math.log(p / PI_REF[prefix][t]) for t, p in PI[prefix].items())


def evaluated(rollout: Rollout) -> Rollout:
    """What the reference hands back: every token with log pi_ref, the KL there and pi_ref's top list."""
    ids = [t.id for t in rollout.tokens]
    tokens = []
    for i, t in enumerate(rollout.tokens):
        prefix = tuple(ids[:i])
        ref_top = ranked(PI_REF[prefix])
        tokens.append(dataclasses.replace(t, ref_logprob=math.log(PI_REF[prefix][t.id]), kl=kl_at(prefix),
                                          ref_top_id=ref_top[0].id, ref_top=ref_top))
    return dataclasses.replace(rollout, tokens=tuple(tokens))


def streamed_session():
    """Four rollouts streamed as a run sends them; r0, r1 and r3 finished, r2 still streaming (no reference yet)."""
    from kit import rollout_finished, run_started, token_batch

    from explorer.core.session import Session

    session = Session()
    session.add(run_started(4))
    paths = {**FINISHED, 2: STREAMING}
    for step in range(3):
        session.add(token_batch(step, {i: (pi_token(tuple(ids[:step]), ids[step]), LETTERS[ids[step]])
                                       for i, ids in paths.items()}))
    for i, ids in FINISHED.items():
        session.add(rollout_finished(i, "".join(LETTERS[t] for t in ids),
                                     [pi_token(tuple(ids[:p]), t) for p, t in enumerate(ids)]))
    return session


def annotate(session) -> None:
    from explorer.core.types import ReferenceInfo

    group = session.group("q0")
    done = tuple(evaluated(r) for r in group.rollouts if r.finish_reason is not None)
    session.annotate(dataclasses.replace(group, rollouts=done), ReferenceInfo("model", "a base model", "f00"))


@pytest.fixture
def panel(qtbot):
    """The views of a streamed session, as the window shows them (tree, side plot), before the reference ran."""
    from explorer.gui.views.panel import ViewsPanel

    from gui_kit import laid_out, show

    views = ViewsPanel(lambda: False)
    show(qtbot, laid_out(views), 1200, 800)
    views.show_session(streamed_session())
    views.tree_view.resize(900, 500)
    QApplication.processEvents()
    return views


def node(view: TokenTreeView, ids) -> int:
    return view.tree.node_for(ids)


def fill(view: TokenTreeView, n: int) -> QColor:
    return view.icicle.fills[int(view.icicle.node_styles[n])].color()


def test_reference_colourings_wait_for_reference_facts(panel):
    view = panel.tree_view
    log_ratio = COLOUR_BY.index("log_ratio")
    item = view.colour_box.model().item(log_ratio)
    assert not item.isEnabled() and not view.has_reference
    assert "needs a reference policy" in view.colour_box.itemData(log_ratio, Qt.ItemDataRole.ToolTipRole)
    view.set_colour_by("log_ratio")  # chosen before the facts are there: π is drawn meanwhile
    assert view.colour_by == "log_ratio" and view.shown_colour == "prob" and view.colour_box.currentData() == "prob"
    assert len(view.icicle.marks) == 0
    annotate(panel.session)
    panel.show_reference()
    assert item.isEnabled() and view.colour_box.itemData(log_ratio, Qt.ItemDataRole.ToolTipRole) is None
    assert view.shown_colour == "log_ratio" and view.colour_box.currentData() == "log_ratio"
    assert view.colorbar.levels() == (-LOG_RATIO_FULL_SCALE, LOG_RATIO_FULL_SCALE)
    assert "π_ref" in view.colorbar.getAxis("left").labelText
    # the reference cleared: the choice stays, π is drawn again and the marks go
    panel.session.clear_reference_policy()
    panel.show_reference()
    assert not item.isEnabled() and view.shown_colour == "prob" and view.colour_by == "log_ratio"
    assert len(view.icicle.marks) == 0 and view.colorbar.levels() == (0, 1)


def test_log_ratio_colours_diverge_by_sign_and_leave_unevaluated_boxes_grey(panel):
    view = panel.tree_view
    annotate(panel.session)
    panel.show_reference()
    view.set_colour_by("log_ratio")
    above, below = fill(view, node(view, [1, 2, 3])), fill(view, node(view, [1, 2, 4]))  # log 2, log(.3/.65)
    # green where pi favours the token, pink where pi_ref does (as the panes shade it)
    assert above.green() > max(above.red(), above.blue()) + 10 and below.red() > below.green() + 10
    neutral = fill(view, node(view, [1]))  # pi = pi_ref: the scale's middle, near white
    assert min(neutral.red(), neutral.green(), neutral.blue()) > 230
    styles, scale = view.icicle.node_styles, SCALES["log_ratio"]
    assert scale.levels[styles[node(view, [1])]] == 0  # the scale's neutral middle
    grey = styles[node(view, STREAMING)]  # only the streaming r2 passes there
    assert grey == len(scale.levels) and grey == styles[ROOT]  # the unknown colour, after the scale's
    g = view.icicle.fills[grey].color()
    assert g.red() == g.green() == g.blue() and g != neutral
    ghosts = styles[view.tree.ghost_mask]
    assert len(ghosts) and (ghosts == len(scale.levels)).all()


def test_kl_colours_are_sequential_on_a_scale_that_follows_the_data(panel):
    view = panel.tree_view
    annotate(panel.session)
    panel.show_reference()
    view.set_colour_by("kl")
    # the largest KL here is after "A B" (0.25 nats): the 99th percentile, rounded up to 0.5, is full colour
    assert 0.2 < kl_at((1, 2)) < 0.5 and view.colorbar.levels() == (0.0, 0.5)
    assert "full colour at 0.5 nats" in view.colorbar.toolTip() and "99th percentile" in view.colorbar.toolTip()
    levels = view.icicle.node_styles
    # C and D were drawn from one distribution (after "A B"): one KL, one colour; F's (after "A E") is lower
    assert levels[node(view, [1, 2, 3])] == levels[node(view, [1, 2, 4])] > levels[node(view, [1, 5, 6])]
    assert levels[node(view, [1, 2, 3])] == round(kl_at((1, 2)) / 0.5 * SHADE_LEVELS)
    assert levels[node(view, STREAMING)] == len(SCALES["kl"].levels)  # grey


def test_a_reference_as_close_as_the_exact_copy_is_not_one_dark_colour(panel):
    """KLs of a hundredth of a nat (Q4 against its float copy): the scale comes down to them, so the boxes keep
    their differences instead of all sitting in the scale's first bucket."""
    view = panel.tree_view
    group = panel.session.group("q0")
    done = tuple(dataclasses.replace(r, tokens=tuple(dataclasses.replace(t, kl=t.kl * 0.02) for t in r.tokens))
                 for r in (evaluated(r) for r in group.rollouts if r.finish_reason is not None))
    panel.session.annotate(dataclasses.replace(group, rollouts=done), ReferenceInfo("exact", "the float copy", "f01"))
    panel.show_reference()
    view.set_colour_by("kl")
    top = kl_at((1, 2)) * 0.02  # 0.005 nats
    assert view.colorbar.levels() == (0.0, 0.01)
    levels = view.icicle.node_styles
    assert levels[node(view, [1, 2, 3])] == round(top / 0.01 * SHADE_LEVELS) > SHADE_LEVELS // 3
    assert levels[node(view, [1, 2, 3])] > levels[node(view, [1, 5, 6])] > levels[node(view, [1])]
    # back to a far reference: the scale follows it up again
    annotate(panel.session)
    panel.show_reference()
    assert view.colorbar.levels() == (0.0, 0.5)


def test_a_fork_where_the_policies_prefer_different_tokens_is_marked_and_says_both(panel):
    view = panel.tree_view
    annotate(panel.session)
    panel.show_reference()
    view.grab()
    ab, ae = node(view, [1, 2]), node(view, [1, 5])  # two forks: the policies differ after "A B", agree after "A E"
    assert {ab, ae} <= set(view.icicle_layout.forks.tolist())
    assert view.icicle.marks.tolist() == [ab] and view.icicle.drawn_marks == [ab]
    text = view.hover_text(ab)
    assert "next token: \u03c0 prefers \u201cC\u201d 0.7 \u00b7 \u03c0_ref prefers \u201cD\u201d 0.65" in text
    assert "next token" not in view.hover_text(ae)
    words = view.hover_text(node(view, [1, 2, 4]))  # D: pi .3, pi_ref .65
    assert "\u03c0(token | prefix) = 0.3000" in words and "\u03c0_ref(token | prefix) = 0.65" in words
    assert f"log \u03c0 \u2212 log \u03c0_ref = {math.log(0.3 / 0.65):.3f}".replace("-", "\u2212") in words
    assert f"KL(\u03c0 \u2016 \u03c0_ref) at this position = {kl_at((1, 2)):.3f} nats" in words
    assert "\u03c0_ref" not in view.hover_text(node(view, STREAMING))  # nothing known there yet
    # a mark stays in any colouring; a fork label steps right of it
    view.set_colour_by("entropy")
    view.grab()
    assert view.icicle.drawn_marks == [ab]


def test_the_session_trees_keep_the_facts_and_an_opened_set_brings_its_own(qtbot, panel):
    from explorer.core.session import Session

    annotate(panel.session)
    panel.show_reference()
    # the session's own tree took them, not the view: a tab shown later (or a view made later) finds them there
    assert panel.session.trees["q0"].has_reference
    opened = Session()  # a saved set read back: its groups come whole, the tokens with their facts
    for group in panel.session.groups():
        opened.add_group(dataclasses.replace(group, rollouts=tuple(
            r for r in group.rollouts if r.finish_reason is not None)))
    panel.show_session(opened)
    view = panel.tree_view
    view.set_colour_by("log_ratio")
    assert view.has_reference and view.shown_colour == "log_ratio" and len(view.icicle.marks) == 1
    assert panel.side_plot.kl_shown


def test_side_plot_shows_kl_per_position_only_with_reference_facts(panel):
    side, view = panel.side_plot, panel.tree_view
    assert not side.kl_shown and len(side.series()["kl"]) == 0
    assert [label for label, _ in side.key_entries()] == ["group mean", side.rollout]
    annotate(panel.session)
    panel.show_reference()
    assert side.kl_shown and side.kl_plot.vb.linkedView(0) is side.prob_plot.vb
    view.select_node(node(view, [1, 5, 6]))
    assert side.rollout == "q0.r3"
    series = side.series()
    np.testing.assert_allclose(series["kl"], [kl_at(()), kl_at((1,)), kl_at((1, 5))])
    # the group mean at each position: over the evaluated rollouts that reach it (r0, r1, r3; not the streaming r2)
    np.testing.assert_allclose(series["mean_kl"], [kl_at(()), kl_at((1,)), (2 * kl_at((1, 2)) + kl_at((1, 5))) / 3])
    x, y = side.rollout_kl.getData()
    np.testing.assert_allclose(y, series["kl"])
    labels = [label for label, _ in side.key_entries()]
    assert labels == ["group mean", "q0.r3", "KL(π ‖ π_ref) of q0.r3"] and "KL(π ‖ π_ref)" in side.key.text()
    assert "KL" in side.key.toolTip()
    panel.session.clear_reference_policy()
    panel.show_reference()
    assert not side.kl_shown and len(side.key_entries()) == 2


def test_an_infinite_kl_is_marked_at_the_top_of_the_kl_plot(panel):
    from explorer.core.types import ReferenceInfo

    group = panel.session.group("q0")
    done = []
    for r in group.rollouts:
        if r.finish_reason is not None:
            r = evaluated(r)
            if r.id == "q0.r3":  # pi_ref gives 0 to a token pi does not, after "A E"
                r = dataclasses.replace(r, tokens=r.tokens[:2] + (dataclasses.replace(r.tokens[2], kl=math.inf),))
            done.append(r)
    panel.session.annotate(dataclasses.replace(group, rollouts=tuple(done)), ReferenceInfo("top_p", "top-p .9", "f"))
    panel.show_reference()
    side = panel.side_plot
    panel.tree_view.select_node(node(panel.tree_view, [1, 5, 6]))
    assert math.isinf(side.series()["kl"][2]) and math.isinf(side.series()["mean_kl"][2])
    x, y = side.infinite_kl.getData()
    assert x.tolist() == [2] and y[0] == pytest.approx(max(kl_at(()), kl_at((1,))))  # at the top of the finite ones
    _, curve = side.rollout_kl.getData()
    assert np.isnan(curve[2])  # no value drawn for it


def test_facts_that_come_with_the_streamed_tokens_colour_the_tree_as_it_grows(qtbot, view):
    """A reference that follows the run: each streamed token carries its facts, and the tree shows them at once."""
    from kit import run_started, token_batch

    from explorer.core.session import Session

    session = Session()
    session.add(run_started(2))
    paths = {0: [1, 2, 3], 1: [1, 2, 4]}
    for step in range(3):
        session.add(token_batch(step, {i: (evaluated(Rollout(
            "x", 0, 0, "", tuple(pi_token(tuple(ids[:p]), t) for p, t in enumerate(ids[: step + 1])), None)
        ).tokens[step], LETTERS[ids[step]]) for i, ids in paths.items()}))
    tree = session.trees["q0"]
    view.set_tree(tree)
    view.set_colour_by("log_ratio")
    assert view.has_reference and view.shown_colour == "log_ratio"
    assert view.icicle.marks.tolist() == [tree.node_for([1, 2])]  # the fork where pi prefers C and pi_ref D
    assert SCALES["log_ratio"].levels[view.icicle.node_styles[tree.node_for([1, 2, 4])]] < 0  # pi < pi_ref: pink
    # a show_reference while they stream (another group annotated) finds their facts in already: nothing to redraw
    version = tree.version
    assert not tree.take_reference(session.group("q0").rollouts) and tree.version == version


# -- level of detail, labels by importance, one colour table ---------------------------------------------------------
def _sampled_from_the_top(top, rng) -> int:
    p = np.exp([t.logprob for t in top]) ** 2  # sharpened, so chains run between the forks
    return int(top[rng.choice(len(top), p=p / p.sum())].id)


def policy_rollouts(n: int, length: int, seed: int) -> list[Rollout]:
    """Rollouts sampled from make_info's policy cut to its top 3 (a peaked next-token distribution that depends
    only on the prefix, as a model's does): they share prefixes and part where the policy is unsure."""
    return sampled_rollouts(n, length, seed, pick=_sampled_from_the_top)


def grown(rollouts: list[Rollout]) -> TokenTree:
    t = TokenTree("q0", "Name a large body of water.")
    for r in rollouts:
        t.add_rollout(r)
    return t


def painted_at(qtbot, tree: TokenTree, size: tuple[int, int], mode: str = "empirical") -> TokenTreeView:
    v = TokenTreeView()
    qtbot.addWidget(v)
    v.resize(*size)
    v.set_mode(mode)
    v.show()
    qtbot.waitExposed(v)
    v.set_tree(tree)
    v.grab()  # a paint: its record is what was drawn
    return v


K64_TREES = {"policy": lambda: grown(policy_rollouts(64, 40, seed=3)),
             "comb": lambda: grown(sampled_rollouts(64, 40, seed=1))}  # forks nested in the majority's child


@pytest.mark.parametrize("mode", ["empirical", "model"])
@pytest.mark.parametrize("size", [(1000, 500), (300, 190)])
def test_at_fit_k64_chains_are_single_boxes_and_nothing_drawn_is_under_a_pixel(qtbot, mode, size):
    tree = K64_TREES["policy"]()
    view = painted_at(qtbot, tree, size, mode)
    ice, record = view.icicle_layout, view.icicle.painted
    assert record.striped_runs == 0 and record.runs == len(ice.run_head)  # every chain one box
    assert record.min_width >= 1 and record.min_height >= 1
    plot_height = view.plot.vb.height()
    drawn = ice.height[ice.height > 0] * plot_height
    if mode == "model":  # there were boxes under a pixel: they were merged, not drawn thinner
        assert (drawn < 1).sum() > 0 and record.boxes < len(drawn)
    # zoomed in, the chains in view are drawn token by token, each token with its own text
    view.plot.vb.setRange(xRange=(0, 2), yRange=(0, 0.2), padding=0)
    view.grab()
    zoomed = view.icicle.painted
    assert zoomed.striped_runs > 0 and zoomed.min_width >= 1 and zoomed.min_height >= 1
    if size[1] >= 500:  # room below the fork labels for the tokens' own texts
        assert any(t.strip("\u2423") in {w.strip() for w in WORDS.values()} for t in zoomed.texts), zoomed.texts


def labels(view: TokenTreeView) -> dict[int, tuple]:
    return {node: (rect, text) for node, rect, text in view.icicle.painted.labels}


def assert_labels_by_importance(view: TokenTreeView) -> None:
    """No two labels overlap; among the forks whose label has a place in view, a larger one is never unlabelled
    while a smaller one is labelled."""
    rects = [rect for _, rect, _ in view.icicle.painted.labels]
    for i, a in enumerate(rects):
        assert not any(a.intersects(b) for b in rects[i + 1:])
    height, done = view.icicle_layout.height, labels(view)
    missing = [f for f in view.icicle.painted.forks_in_view if f not in done]
    labelled = [f for f in view.icicle.painted.forks_in_view if f in done]
    if missing and labelled:
        assert min(height[f] for f in labelled) >= max(height[f] for f in missing)


@pytest.mark.parametrize("name", list(K64_TREES))
def test_at_k64_every_fork_of_a_tenth_of_the_rollouts_is_labelled_and_no_smaller_one_first(qtbot, name):
    tree = K64_TREES[name]()
    view = painted_at(qtbot, tree, (1000, 500))
    ice, done = view.icicle_layout, labels(view)
    large = [f for f in ice.forks.tolist() if tree.counts[f] >= 0.1 * 64]
    assert len(large) >= 5  # the tree has enough of them to crowd each other
    assert all(f in done for f in large)
    assert_labels_by_importance(view)
    for fork in large:  # each label right of its fork, inside the fork's extent
        rect, text = done[fork]
        y0, y1 = (view.plot.vb.mapViewToScene(QPointF(0, y)).y() for y in (ice.y0[fork], ice.y0[fork] + ice.height[fork]))
        assert "/64" in text or f"/{int(tree.counts[fork])}" in text
        assert rect.top() >= min(y0, y1) - 1 and rect.bottom() <= max(y0, y1) + 1
    # a smaller view keeps the order and the gaps, with fewer labels
    small = painted_at(qtbot, tree, (300, 190))
    assert 0 < len(small.icicle.painted.labels) < len(view.icicle.painted.labels)
    assert_labels_by_importance(small)


def test_the_shared_prefix_is_always_labelled_with_its_text_and_pi(qtbot):
    rollouts = [make_rollout(i, [1, 3, 4] + ids) for i, ids in enumerate([[5, 8], [5, 8], [6, 8], [7]])]
    tree = grown(rollouts)
    prefix = tree.node_for([1, 3, 4])
    pi = math.exp(tree.cum_logprobs[prefix])
    for size in ((1000, 500), (300, 190)):
        view = painted_at(qtbot, tree, size)
        head, rect, text = view.icicle.painted.labels[0]  # the first label, before every fork's
        assert head == tree.node_for([1]) and float(text.rsplit("\u03c0 ", 1)[1]) == pytest.approx(pi, rel=0.01)
        assert text.startswith("The ocean is") or "\u2026" in text  # its text, elided only where room is short
    assert text.startswith("The")
    forks = [n for n, _, _ in view.icicle.painted.labels[1:]]
    assert forks and all(f in view.icicle_layout.forks for f in forks)


def test_panes_and_tree_give_the_same_colour_for_the_same_value(qtbot, view, tree):
    from explorer.gui.widgets.tokens import TokenTextView

    rollout = make_rollout(0, ROLLOUT_IDS[0])
    pane = TokenTextView()
    qtbot.addWidget(pane)
    pane.append_tokens(list(rollout.tokens), [t.token for t in rollout.tokens])
    for mode in ("prob", "entropy"):
        pane.options.set_shading(mode)
        view.set_colour_by(mode)
        compared = 0
        for position, token in enumerate(rollout.tokens):
            fill = view.icicle.fills[int(view.icicle.node_styles[tree.node_at(rollout.id, position)])].color()
            cursor = QTextCursor(pane.document())
            start, _ = pane.token_span(position)
            cursor.setPosition(start + 1)
            background = cursor.charFormat().background()
            if background.style() == Qt.BrushStyle.NoBrush:  # unshaded: the base colour, in the tree as well
                assert fill == view.palette().color(QPalette.ColorRole.Base)
            else:
                assert fill == background.color()
                compared += 1
        assert compared >= 2
    # a chain drawn as one box takes its tokens' mean: exp(mean log pi) for pi
    ice = view.icicle_layout
    run = int(np.argmax(ice.run_x1 - ice.run_x0))
    nodes = np.flatnonzero(ice.run_of == run)
    view.set_colour_by("prob")
    expected = SCALES["prob"].level_indices(np.array([math.exp(tree.logprobs[nodes].mean())]))[0]
    assert len(nodes) >= 2 and view.icicle.run_styles[run] == expected


def test_before_any_run_the_tree_shows_the_prompt_on_whole_positions_and_says_what_comes(qtbot, view):
    view.set_tree(TokenTree("q0", "Which is the largest ocean?"))
    view.grab()
    (x0, x1), _ = view.plot.vb.viewRange()
    assert x0 <= -1 < 0 < 8 < x1  # the prompt's column and room for the tokens to come, not -0.8 .. 0
    assert any("No rollouts yet" in t for t in view.icicle.painted.texts)
    view.set_tree(None)
    view.grab()
    assert any("No rollouts yet" in t for t in view.icicle.painted.texts)


def test_zoomed_in_the_position_axes_keep_whole_numbers(qtbot, view):
    side = SidePlot()
    qtbot.addWidget(side)
    side.follow(view)
    view.plot.vb.setXRange(2.2, 3.9, padding=0)
    view.grab()
    for axis in (view.plot.getAxis("bottom"), side.entropy_plot.getAxis("bottom")):
        ticks = [v for _, level in axis.tickValues(2.2, 3.9, 800) for v in level]
        assert ticks and all(float(v).is_integer() for v in ticks)


def test_a_chain_marks_where_the_policies_part_only_once_its_tokens_are_drawn(qtbot):
    """Along a chain, where pi and pi_ref prefer different next tokens is per-token detail: drawn with the tokens."""
    from kit import sampled_tok

    def facts(token: TokenInfo, ref_top: int) -> TokenInfo:
        return dataclasses.replace(token, ref_logprob=token.logprob - 0.1, kl=0.05, ref_top_id=ref_top)

    chain = [sampled_tok(1, "The", 0.9), sampled_tok(2, " sea", 0.8), sampled_tok(3, " is", 0.7),
             sampled_tok(4, " deep", 0.9)]
    chain[2] = facts(chain[2], ref_top=9)  # at " is" pi prefers " is", pi_ref another token: marked after " sea"
    chain = [t if t.kl is not None else facts(t, ref_top=t.id) for t in chain]
    other = [chain[0], facts(sampled_tok(5, " lake", 0.1), ref_top=5)]
    tree = TokenTree("q0", "p")
    tree.add_rollout(Rollout("q0.r0", 0, 0, "The sea is deep", tuple(chain), "stop"))
    tree.add_rollout(Rollout("q0.r1", 1, 1, "The lake", tuple(other), "stop"))
    tree.take_reference([Rollout("q0.r0", 0, 0, "", tuple(chain), "stop"),
                         Rollout("q0.r1", 1, 1, "", tuple(other), "stop")])
    sea = tree.node_for([1, 2])
    view = painted_at(qtbot, tree, (1000, 500))
    assert sea in view.icicle.marks.tolist()
    view.plot.vb.setRange(xRange=(-1, 40), padding=0)  # tokens ~20 px wide: the chain is one box
    view.grab()
    assert view.icicle.painted.striped_runs == 0 and sea not in view.icicle.drawn_marks
    view.plot.vb.setRange(xRange=(0, 4), padding=0)  # wide enough for their text: token by token, with the mark
    view.grab()
    assert view.icicle.painted.striped_runs > 0 and sea in view.icicle.drawn_marks
