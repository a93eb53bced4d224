"""A reference policy pi_ref beside the policy pi, in the text views: the log-ratio shading, the token card, the pane
headers, the rollout table's columns and beta, the scoring panel, the statistics panel, and
ViewsPanel.show_reference() re-reading it all from the session after each annotation (or after the facts are
cleared)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QColor, QHelpEvent, QPalette, QTextCursor
from PySide6.QtWidgets import QToolTip

from explorer.core.session import Session
from explorer.core.types import (ModelInfo, QueryGroup, ReferenceInfo, RolloutSet, RunFinished, SamplingParams, Score,
                                 Timings, TopLogprob)
from explorer.gui.views.rollout_table import COLUMNS, RolloutTable
from explorer.gui.views.scoring import COLUMNS as SCORE_COLUMNS, ScoringPanel
from explorer.gui.widgets.style import LOG_RATIO_FULL_SCALE, SHADE_LEVELS, shade_colour, shade_level
from explorer.gui.widgets.tokens import token_tooltip_html
from explorer.gui.views.panel import ViewsPanel
from gui_kit import laid_out, show
from kit import rollout_finished, run_started, sampled_tok, tok

REFERENCE = ReferenceInfo("system", "tiny with system prompt 'Answer in French.'", "fp0", system="Answer in French.")
WORDS = ["The", " Pacific", " Ocean", " is", " largest", "."]


def minus(text: str) -> str:
    return text.replace("-", "\u2212")


def referenced(token, ratio: float, kl: float, ref_top=None):
    """A token with a reference's facts: log pi - log pi_ref = ratio, KL here, pi_ref's top list (its own top 1
    by default, so the two policies agree on the top token)."""
    ref_top = ref_top if ref_top is not None else (TopLogprob(token.id, token.token, token.bytes,
                                                              token.logprob - ratio),)
    return replace(token, ref_logprob=token.logprob - ratio, kl=kl, ref_top_id=ref_top[0].id, ref_top=ref_top)


def finished_session(k: int, words=WORDS) -> Session:
    """k finished rollouts of the same words (rollout i's tokens have ids 100 i + n: every rollout its own row)."""
    session = Session()
    session.add(run_started(k))
    for i in range(k):
        tokens = [sampled_tok(100 * i + n, w, 0.8 - 0.1 * (n % 3)) for n, w in enumerate(words)]
        session.add(rollout_finished(i, "".join(words), tokens))
    session.add(RunFinished(Timings()))
    return session


def annotate(session: Session, ratio_of, kl: float = 0.05, group_id: str = "q0") -> QueryGroup:
    """What a reference evaluation hands the session: every rollout's tokens get facts, ratio_of(i, n) their
    log-ratio."""
    group = session.group(group_id)
    rollouts = tuple(replace(r, tokens=tuple(referenced(t, ratio_of(r.index, n), kl) for n, t in enumerate(r.tokens)))
                     for r in group.rollouts)
    scores = tuple(replace(s, tokens=tuple(referenced(t, 0.25, kl) for t in s.tokens)) for s in group.scores)
    annotated = replace(group, rollouts=rollouts, scores=scores)
    session.annotate(annotated, REFERENCE)
    return annotated


def header(pane) -> str:
    """A pane's facts line as read: no-break spaces and word joiners as plain text."""
    return pane.stats.text().replace("&nbsp;", " ").replace("\u2060", "")


def background(view, index: int):
    """The background colour of a token in a TokenTextView, or None (unshaded)."""
    start, _ = view.token_span(index)
    cursor = QTextCursor(view.document())
    cursor.setPosition(start + 1)
    brush = cursor.charFormat().background()
    return None if brush.style() == Qt.BrushStyle.NoBrush else brush.color()


# -- the colour scale -----------------------------------------------------------------------------------------------
def test_log_ratio_levels_are_signed_saturate_at_the_full_scale_and_are_neutral_without_facts():
    assert shade_level("log_ratio", 0.5, 1.0, None) == 0  # no reference facts: unshaded
    assert shade_level("log_ratio", 0.5, 1.0, 0.0) == 0
    assert shade_level("log_ratio", 0.5, 1.0, math.nan) == 0  # both policies give the token 0
    assert shade_level("log_ratio", 0.5, 1.0, LOG_RATIO_FULL_SCALE) == SHADE_LEVELS
    assert shade_level("log_ratio", 0.5, 1.0, 10 * LOG_RATIO_FULL_SCALE) == SHADE_LEVELS
    assert shade_level("log_ratio", 0.5, 1.0, math.inf) == SHADE_LEVELS  # pi_ref gives the token 0
    assert shade_level("log_ratio", 0.5, 1.0, -LOG_RATIO_FULL_SCALE) == -SHADE_LEVELS
    assert shade_level("log_ratio", 0.5, 1.0, LOG_RATIO_FULL_SCALE / 2) == SHADE_LEVELS // 2
    assert shade_level("log_ratio", 0.5, 1.0, -0.3) == -shade_level("log_ratio", 0.5, 1.0, 0.3) < 0
    # the other modes never see the log-ratio
    assert shade_level("prob", 0.5, 1.0, 5.0) == shade_level("prob", 0.5, 1.0)


@pytest.mark.parametrize("base,text", [("#ffffff", "#000000"), ("#1e1f22", "#dfe1e5")])
def test_the_two_signs_take_two_hues_that_stay_apart_at_every_strength(qapp, base, text):
    pal = QPalette()
    pal.setColor(QPalette.ColorRole.Base, QColor(base))
    pal.setColor(QPalette.ColorRole.Text, QColor(text))
    assert shade_colour("log_ratio", 0, pal) is None
    for level in range(1, SHADE_LEVELS + 1):
        up, down = shade_colour("log_ratio", level, pal), shade_colour("log_ratio", -level, pal)
        assert up.green() > up.red() and down.red() > down.green(), (level, up.name(), down.name())
    # the strongest shades are far from the base and from each other
    up, down = shade_colour("log_ratio", SHADE_LEVELS, pal), shade_colour("log_ratio", -SHADE_LEVELS, pal)
    assert abs(up.hueF() - down.hueF()) > 0.3


# -- the token card -------------------------------------------------------------------------------------------------
def _annotated_atlantic():
    top = (TopLogprob(5, " Pacific", b" Pacific", math.log(0.8)), TopLogprob(6, " Atlantic", b" Atlantic",
                                                                              math.log(0.15)))
    ref_top = (TopLogprob(6, " Atlantic", b" Atlantic", math.log(0.6)),
               TopLogprob(5, " Pacific", b" Pacific", math.log(0.3)))
    token = tok(6, " Atlantic", 0.15, entropy=0.61, rank=2, top=top)
    return replace(token, ref_logprob=math.log(0.6), kl=0.4321, ref_top_id=6, ref_top=ref_top)


def test_the_card_sets_pi_beside_pi_ref_with_their_ratio_the_kl_and_both_top_lists():
    html = token_tooltip_html(_annotated_atlantic(), position=3)
    assert "15.0%" in html and "60.0%" in html  # pi and pi_ref of the token taken
    assert "×0.25" in html  # pi / pi_ref
    assert minus(f"{math.log(0.25):.3f}") in html  # the log-ratio
    assert "0.432 nats" in html  # the KL here
    assert "less likely than the reference" in html
    assert "π top 2" in html and "π_ref top 2" in html
    chosen = [row for row in html.split("<tr") if "▶" in row]
    assert len(chosen) == 2 and all("␣Atlantic" in row for row in chosen)  # marked in both lists
    assert "▶2" in chosen[0] and "▶1" in chosen[1]  # its rank under pi, then under pi_ref
    assert "prefer different tokens" in html  # pi's top is Pacific, pi_ref's Atlantic


def test_the_card_of_a_token_outside_pi_refs_list_adds_it_there_and_without_facts_says_nothing_of_a_reference():
    token = _annotated_atlantic()
    outside = replace(token, ref_top=(TopLogprob(5, " Pacific", b" Pacific", math.log(0.9)),), ref_top_id=5,
                      ref_logprob=math.log(0.01))
    html = token_tooltip_html(outside)
    chosen = [row for row in html.split("<tr") if "▶" in row]
    assert len(chosen) == 2 and "▶·" in chosen[1]  # listed under pi_ref without a rank (not recorded)
    assert "1.00%" in html.split("▶·")[1]  # with its pi_ref
    assert "likelier than the reference" in html and "prefer different tokens" not in html
    plain = replace(token, ref_logprob=None, kl=None, ref_top_id=None, ref_top=())
    assert "π_ref" not in token_tooltip_html(plain) and "KL" not in token_tooltip_html(plain)


def test_the_card_survives_a_reference_that_gives_the_token_nothing():
    token = replace(_annotated_atlantic(), ref_logprob=-math.inf, kl=math.inf)
    html = token_tooltip_html(token)
    assert "×∞" in html and "inf nats" in html


# -- the views ------------------------------------------------------------------------------------------------------
@pytest.fixture
def views(qtbot):
    panel = ViewsPanel(lambda: False)
    show(qtbot, laid_out(panel), 1400, 900)
    return panel


def test_show_reference_shades_by_sign_fills_headers_table_and_stats_and_clearing_takes_it_all_back(views):
    session = finished_session(3)
    views.show_session(session)
    views.options.set_shading("log_ratio")
    pane = views.panes.panes()[0]
    assert all(background(pane.view, n) is None for n in range(len(WORDS)))  # no facts yet: nothing shaded
    assert views.panes.legend.note() == "no reference policy"
    assert not views.rollout_table.reference_shown() and views.beta_box.isHidden()
    assert views.stats_panel.labels["mean_kl"].isHidden() and views.stats_panel.reference.isHidden()

    annotate(session, lambda i, n: (1.5, -1.5, 0.0, 0.4, -0.4, 3.0)[n])
    views.show_reference()

    pane = views.panes.panes()[0]
    up, down, neutral = background(pane.view, 0), background(pane.view, 1), background(pane.view, 2)
    assert neutral is None
    assert up.green() > up.red() and down.red() > down.green()
    assert background(pane.view, 5) != background(pane.view, 3)  # saturated at 2 nats against 0.4
    assert views.panes.legend.note() == ""
    stats = header(pane)
    ratio = 1.5 - 1.5 + 0.0 + 0.4 - 0.4 + 3.0
    assert f"log π/π_ref {ratio:.3f}" in stats and "KL 0.05 per token" in stats and "implicit R +0.3" in stats
    assert "(DPO's, beta 0.1)" in pane.stats.toolTip()
    # the pane took the annotated tokens: its card shows pi_ref
    assert "π_ref" in token_tooltip_html(pane.view.token(0))

    table = views.rollout_table
    assert table.reference_shown() and not views.beta_box.isHidden()
    row = table.proxy.index(0, COLUMNS.index("log π/π_ref"))
    assert row.data() == f"{ratio:.3f}"
    assert table.proxy.index(0, COLUMNS.index("KL/token")).data() == "0.05"
    assert table.proxy.index(0, COLUMNS.index("implicit R")).data() == "+0.3"

    panel = views.stats_panel
    assert not panel.labels["mean_kl"].isHidden() and panel.text("mean_kl") == "0.05 nats"
    assert panel.text("same_top_share") == "100.0%" and panel.text("top_disagreement_share") == "0.0%"
    assert not panel.reference.isHidden() and REFERENCE.description in panel.reference.text()

    views.options.set_beta(0.5)
    assert table.proxy.index(0, COLUMNS.index("implicit R")).data() == "+1.5"
    assert "implicit R +1.5" in header(views.panes.panes()[0])
    assert views.beta_box.value() == 0.5
    views.beta_box.setValue(0.25)  # the box beside the table: the views take its beta
    assert views.options.beta == 0.25 and table.proxy.index(0, COLUMNS.index("implicit R")).data() == "+0.75"

    session.clear_reference_policy()
    views.show_reference()
    pane = views.panes.panes()[0]
    assert all(background(pane.view, n) is None for n in range(len(WORDS)))
    assert "π_ref" not in header(pane) and "π_ref" not in token_tooltip_html(pane.view.token(0))
    assert not table.reference_shown() and views.beta_box.isHidden()
    assert panel.labels["mean_kl"].isHidden() and panel.reference.isHidden()
    assert views.panes.legend.note() == "no reference policy"


def test_a_group_the_reference_has_not_evaluated_yet_says_so_in_the_stats(views):
    session = finished_session(2)
    session.add(run_started(2, group="q1", query="Another?"))
    for i in range(2):
        session.add(rollout_finished(i, "Yes", [sampled_tok(7, "Yes", 0.9)], group="q1"))
    views.show_session(session)
    annotate(session, lambda i, n: 0.5)
    views.show_reference()
    views.select_group("q1")
    panel = views.stats_panel
    assert panel.labels["mean_kl"].isHidden()
    assert "not evaluated under it yet" in panel.reference.text()
    assert not views.rollout_table.reference_shown()


def test_an_opened_set_with_reference_facts_shows_them_without_show_reference(views):
    session = finished_session(2)
    annotate(session, lambda i, n: -0.7)
    model = ModelInfo("m.gguf", "m", "llama", None, None, None, 0, "fp0", False)
    saved = RolloutSet(model, SamplingParams(), session.groups(), reference_policy=REFERENCE)
    views.options.set_shading("log_ratio")
    views.show_session(Session.from_set(saved, "set.json"))
    pane = views.panes.panes()[0]
    colour = background(pane.view, 0)
    assert colour is not None and colour.red() > colour.green()
    assert views.rollout_table.reference_shown()
    assert REFERENCE.description in views.stats_panel.reference.text()


def test_a_token_hovered_after_annotation_shows_the_reference_card(qtbot, views):
    session = finished_session(1)
    views.show_session(session)
    annotate(session, lambda i, n: 0.5)
    views.show_reference()
    view = views.panes.panes()[0].view
    pos = view.token_rect(1).center()
    assert view.viewportEvent(QHelpEvent(QEvent.Type.ToolTip, pos, view.viewport().mapToGlobal(pos)))
    assert "π_ref top 1" in QToolTip.text() and "×1.65" in QToolTip.text()
    QToolTip.hideText()


def test_show_reference_of_a_finished_group_leaves_the_shown_text_in_place(views):
    session = finished_session(2)
    views.show_session(session)
    views.options.set_shading("log_ratio")
    pane = views.panes.panes()[0]
    removed = []
    pane.view.document().contentsChange.connect(lambda pos, rem, add: removed.append((rem, add)))
    annotate(session, lambda i, n: 1.0)
    views.show_reference()
    assert views.panes.panes()[0] is pane and pane.text() == "".join(WORDS)
    assert all(rem == add for rem, add in removed)  # formats changed in place, no text replaced


# -- the table ------------------------------------------------------------------------------------------------------
def test_reference_columns_sort_with_missing_values_last_and_follow_beta(qtbot):
    session = finished_session(3)
    annotate(session, lambda i, n: (0.5, -1.0, 0.0)[i] / len(WORDS))
    rollouts = list(session.group("q0").rollouts)
    plain = finished_session(4).group("q0").rollouts[3]  # its own tokens, never evaluated
    table = show(qtbot, RolloutTable(), 1100, 300)
    table.set_rollouts(rollouts + [plain])
    column = COLUMNS.index("log π/π_ref")
    table.view.sortByColumn(column, Qt.SortOrder.AscendingOrder)
    assert [r.ids[0] for r in table.visible_rows()] == ["q0.r1", "q0.r2", "q0.r0", "q0.r3"]
    table.view.sortByColumn(column, Qt.SortOrder.DescendingOrder)
    assert [r.ids[0] for r in table.visible_rows()] == ["q0.r0", "q0.r2", "q0.r1", "q0.r3"]
    assert table.proxy.index(3, column).data() == "—"
    reward = COLUMNS.index("implicit R")
    table.view.sortByColumn(reward, Qt.SortOrder.DescendingOrder)
    assert table.proxy.index(0, reward).data() == "+0.05"
    table.options.set_beta(2.0)
    assert table.proxy.index(0, reward).data() == "+1"
    table.set_rollouts([plain])
    assert not table.reference_shown()


def test_merged_rows_take_the_facts_of_any_evaluated_rollout(qtbot):
    session = Session()
    session.add(run_started(2))
    tokens = [sampled_tok(1, "Yes", 0.9)]
    session.add(rollout_finished(0, "Yes", tokens))
    session.add(rollout_finished(1, "Yes", tokens))
    group = session.group("q0")
    evaluated = replace(group.rollouts[1], tokens=tuple(referenced(t, 0.2, 0.01) for t in tokens))
    table = show(qtbot, RolloutTable(), 900, 200)
    table.set_rollouts([group.rollouts[0], evaluated])  # one row, its first rollout not evaluated yet
    assert len(table.visible_rows()) == 1 and table.reference_shown()
    assert table.proxy.index(0, COLUMNS.index("log π/π_ref")).data() == "0.200"


# -- the scoring panel ----------------------------------------------------------------------------------------------
def test_scores_show_their_log_ratio_and_mean_kl_only_when_they_have_them(qtbot):
    panel = show(qtbot, ScoringPanel(), 900, 300)
    tokens = (tok(1, "Pacific", 0.5), tok(2, " Ocean", 0.9))
    plain = Score("Pacific Ocean", tokens)
    panel.set_group("q0", "Which is the largest ocean?", [plain])
    ratio_column = SCORE_COLUMNS.index("log π/π_ref")
    assert panel.table.isColumnHidden(ratio_column) and panel.table.isColumnHidden(ratio_column + 1)
    evaluated = Score("Pacific Ocean", tuple(referenced(t, -0.3, 0.02) for t in tokens))
    panel.show_scores([evaluated])
    assert not panel.table.isColumnHidden(ratio_column)
    assert panel.table.item(0, ratio_column).text() == minus("-0.600")
    assert panel.table.item(0, ratio_column + 1).text() == "0.02"


def test_show_reference_redraws_the_scores_of_the_shown_group(views):
    session = finished_session(1)
    session.set_scores("q0", [Score("Pacific", (tok(1, "Pacific", 0.5),))])
    views.show_session(session)
    annotate(session, lambda i, n: 0.0)
    views.show_reference()
    column = SCORE_COLUMNS.index("log π/π_ref")
    assert not views.scoring.table.isColumnHidden(column)
    assert views.scoring.table.item(0, column).text() == "0.250"


# -- the View menu --------------------------------------------------------------------------------------------------
def test_the_view_menu_offers_log_ratio_shading_and_says_what_it_shades_against(window):
    action = window.menu_actions["shade_log_ratio"]
    assert action.isEnabled() and "no reference policy" in action.toolTip()
    action.trigger()
    assert window.views.options.shading == "log_ratio" and action.isChecked()
    assert window.views.panes.legend.note() == "no reference policy"
    session = finished_session(1)
    annotate(session, lambda i, n: 0.1)
    window.views.show_session(session)
    assert REFERENCE.description in action.toolTip() and REFERENCE.description in action.statusTip()
    window.views.options.set_shading("prob")
    assert window.menu_actions["shade_prob"].isChecked()


def test_the_statistics_panel_shows_the_mismatch_numbers_of_the_query_and_of_the_set(views):
    session = finished_session(2)
    session.add(run_started(1, group="q1", query="Another?"))
    session.add(rollout_finished(0, "Yes", [sampled_tok(7, "Yes", 0.9)], group="q1"))
    annotate(session, lambda i, n: 0.5 if n % 2 else -0.25)
    annotate(session, lambda i, n: 1.0, kl=0.3, group_id="q1")
    session.set_reward(None)
    views.show_session(session)
    views.select_group("q0")
    panel = views.stats_panel
    assert panel.tabs.isTabEnabled(1)
    # k1 = -log r = log pi - log pi_ref, a mean per token: this query's (6 tokens x 2 rollouts), and the set's
    k1_query = (3 * 0.5 - 3 * 0.25) / 6
    k1_set = (12 * k1_query + 1.0) / 13
    assert panel.mismatch_text("kl_k1", 0) == f"{k1_query:.3g} ({k1_query - 0.05:+.2g})"
    exact_set = (12 * 0.05 + 0.3) / 13
    assert panel.mismatch_text("kl_k1", 1) == f"{k1_set:.3g} ({k1_set - exact_set:+.2g})"
    w = [math.exp(-0.5)] * 6 + [math.exp(0.25)] * 6
    ess = sum(w) ** 2 / sum(x * x for x in w)
    assert panel.mismatch_text("kl_exact", 0) == "0.05"
    assert panel.mismatch_text("ess", 0) == f"{ess:.1f} of 12 ({100 * ess / 12:.0f}%)"
    assert panel.mismatch_text("tis_clip_fraction", 0) == "0.0% (C = 2)"
    # another cap: r = pi_ref / pi = e^0.25 = 1.28 (q0's tokens of log-ratio -0.25) is clipped at C = 1.2
    session.set_tis_cap(1.2)
    views.select_group("q1")
    assert panel.mismatch_text("tis_clip_fraction", 0) == "0.0% (C = 1.2)"  # r = pi_ref / pi = e^-1: not clipped
    assert panel.mismatch_text("tis_clip_fraction", 1) == f"{100 * 6 / 13:.1f}% (C = 1.2)"  # e^0.25 of q0's


def test_a_server_s_reference_shows_the_kl_unavailable_never_zero(views):
    server_reference = replace(REFERENCE, kind="model", description="served.gguf here", kl_kind="unavailable")
    session = finished_session(2)
    group = session.group("q0")
    rollouts = tuple(replace(r, tokens=tuple(replace(referenced(t, 0.1, 0.0), kl=None) for t in r.tokens))
                     for r in group.rollouts)
    session.annotate(replace(group, rollouts=rollouts), server_reference)
    session.set_reward(None)
    views.show_session(session)
    panel = views.stats_panel
    assert panel.text("mean_kl") == "unavailable" and panel.text("kl_p99") == "unavailable"
    assert panel.mismatch_text("kl_exact", 0) == "unavailable" and "(" not in panel.mismatch_text("kl_k1", 0)
    assert panel.mismatch_text("kl_k1", 0) == "0.1"
    assert "exact KL is unavailable" in panel.reference.text()
    assert all(r.mean_kl is None and r.log_ratio is not None for r in session.group("q0").rollouts)
    card = token_tooltip_html(session.group("q0").rollouts[0].tokens[0])
    assert "KL(π || π_ref) here" in card and "unavailable" in card
