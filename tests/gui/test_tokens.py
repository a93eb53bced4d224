"""Token display: number formatting, hover card HTML, text-to-token mapping, shading colours, the token view."""

import math

import pytest
from PySide6.QtCore import QEvent, QPoint
from PySide6.QtGui import QColor, QHelpEvent, QPalette, QTextCursor
from PySide6.QtWidgets import QToolTip

from explorer.core.types import TokenInfo, TopLogprob
from explorer.gui.widgets.style import SHADE_LEVELS, shade_colour, shade_level
from explorer.core.token_text import decode_pieces, fit_pieces
from kit import tok
from explorer.core.numbers import format_percent, format_probability
from explorer.gui.widgets.tokens import TokenTextView, token_label, token_tooltip_html


def palette(base, text):
    pal = QPalette()
    pal.setColor(QPalette.ColorRole.Base, QColor(base))
    pal.setColor(QPalette.ColorRole.Text, QColor(text))
    return pal


def contrast(a: QColor, b: QColor) -> float:
    def lum(c):
        def ch(v):
            return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
        return 0.2126 * ch(c.redF()) + 0.7152 * ch(c.greenF()) + 0.0722 * ch(c.blueF())
    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_probability_in_scientific_notation_and_as_power_of_ten_when_exp_underflows():
    assert format_probability(math.log(3.2e-14)) == "3.2e\u221214"
    assert format_probability(math.log(0.5)) == "0.5"
    assert format_probability(-1000.0) == "10^\u2212434.3"  # exp(-1000) is 0.0 in doubles
    assert "<sup>" in format_probability(-1000.0, html_markup=True)
    assert format_probability(-math.inf) == "0"
    assert format_percent(0.873) == "87.3%"
    assert format_percent(0.0042) == "0.42%"


def test_token_label_makes_whitespace_and_partial_bytes_visible():
    assert token_label(" a\n", b" a\n") == "␣a↵"
    assert token_label("\ufffd", b"\xe6\x97") == "<E6><97>"


def test_tooltip_lists_probability_rank_entropy_and_alternatives_with_the_chosen_one_marked():
    top = (TopLogprob(5, " Pacific", b" Pacific", math.log(0.8)),
           TopLogprob(6, " Atlantic", b" Atlantic", math.log(0.15)),
           TopLogprob(7, " Indian", b" Indian", math.log(0.05)))
    token = TokenInfo(6, " Atlantic", b" Atlantic", math.log(0.15), math.log(0.3), 0.61, 2, top)
    html = token_tooltip_html(token, position=4)
    assert "15.0%" in html and "80.0%" in html and "5.00%" in html  # own and alternatives' probabilities
    assert "rank</td><td>&nbsp;2" in html
    assert "0.610 nats" in html
    assert "␣Pacific" in html and "␣Indian" in html
    assert "30.0%" in html  # sampler probability
    assert "position 4" in html
    # bars: width proportional to probability (110 px scale)
    assert 'width="88"' in html and 'width="16"' in html
    chosen_rows = [row for row in html.split("<tr") if "▶" in row]
    assert len(chosen_rows) == 1 and "␣Atlantic" in chosen_rows[0] and "font-weight:bold" in chosen_rows[0]


def test_tooltip_adds_the_chosen_token_when_it_is_outside_the_top_n():
    top = (TopLogprob(1, "a", b"a", math.log(0.9)),)
    token = TokenInfo(9, "z", b"z", math.log(0.001), None, 0.4, 17, top)
    html = token_tooltip_html(token)
    chosen = [row for row in html.split("<tr") if "▶" in row]
    assert len(chosen) == 1 and "▶17" in chosen[0] and ">z<" in chosen[0]


def test_multibyte_character_split_across_tokens_belongs_to_the_completing_token():
    tokens = [tok(1, "caf"), tok(2, b"\xc3"), tok(3, b"\xa9"), tok(4, "!")]
    assert decode_pieces(tokens) == ["caf", "", "é", "!"]


def test_fit_pieces_follows_the_displayed_text():
    assert fit_pieces(["Hello", " wor", "ld", "STOP"], "Hello world") == ["Hello", " wor", "ld", ""]
    assert fit_pieces([" Pac", "ific"], "Pacific") == ["Pac", "ific"]
    # end-of-generation and control tokens spell their names in their bytes but add no text
    assert fit_pieces(["A", "<|ctrl|>", "B", "<|im_end|>"], "AB") == ["A", "", "B", ""]
    unrelated = fit_pieces(["ab", "cd"], "xyzuvw")
    assert "".join(unrelated) == "xyzuvw" and len(unrelated) == 2


@pytest.mark.parametrize("base,text", [("#ffffff", "#000000"), ("#1e1f22", "#dfe1e5")])
@pytest.mark.parametrize("mode,sign", [("prob", 1), ("entropy", 1), ("log_ratio", 1), ("log_ratio", -1)])
def test_every_shade_keeps_the_text_readable_on_light_and_dark_palettes(qapp, base, text, mode, sign):
    pal = palette(base, text)
    assert shade_colour(mode, 0, pal) is None
    previous = QColor(base)
    for level in range(1, SHADE_LEVELS + 1):
        colour = shade_colour(mode, sign * level, pal)
        assert contrast(colour, QColor(text)) >= 4.5, (mode, base, level, colour.name())
        # stronger levels sit further from the base colour: the scale is monotone
        assert contrast(colour, QColor(base)) >= contrast(previous, QColor(base)) - 0.02
        previous = colour


def test_shade_levels_follow_probability_and_entropy():
    assert shade_level("prob", 1.0, 3.0) == 0
    assert shade_level("prob", 0.0, 0.0) == SHADE_LEVELS
    assert shade_level("prob", 0.2, 0.0) > shade_level("prob", 0.7, 0.0)
    assert shade_level("entropy", 0.01, 0.0) == 0
    assert shade_level("entropy", 0.99, 10.0) == SHADE_LEVELS
    with pytest.raises(ValueError, match="unknown shading mode"):
        shade_colour("rainbow", 3)


def _background(view, position):
    cursor = QTextCursor(view.document())
    cursor.setPosition(position + 1)  # the format of the character before the cursor
    return cursor.charFormat().background().color().name()


def test_view_shades_tokens_finds_them_under_the_mouse_and_switches_to_entropy(qtbot):
    view = TokenTextView()
    qtbot.addWidget(view)
    view.resize(400, 200)
    view.show()
    qtbot.waitExposed(view)
    tokens = [tok(1, "sure", 0.99, entropy=3.9), tok(2, " odd", 0.05, entropy=0.05), tok(3, " end", 0.5)]
    view.append_tokens(tokens, ["sure", " odd", " end"])
    assert view.text() == "sure odd end"
    sure_bg, odd_bg = _background(view, 0), _background(view, 6)
    assert sure_bg != odd_bg
    for index in range(3):
        assert view.token_at(view.token_rect(index).center()) == index
    assert view.token_at(QPoint(390, 190)) is None  # blank space below the text
    view.options.set_shading("entropy")
    assert _background(view, 0) != sure_bg and _background(view, 6) != odd_bg
    assert view.text() == "sure odd end"


def test_view_shows_the_hover_card_for_the_token_under_the_mouse(qtbot):
    view = TokenTextView()
    qtbot.addWidget(view)
    view.resize(300, 120)
    view.show()
    qtbot.waitExposed(view)
    top = (TopLogprob(2, " b", b" b", math.log(0.6)), TopLogprob(3, " c", b" c", math.log(0.3)))
    view.append_tokens([tok(1, "a", 0.9), tok(3, " c", 0.3, rank=2, top=top)], ["a", " c"])
    pos = view.token_rect(1).center()
    event = QHelpEvent(QEvent.Type.ToolTip, pos, view.viewport().mapToGlobal(pos))
    assert view.viewportEvent(event)
    assert QToolTip.isVisible()
    assert "␣c" in QToolTip.text() and "30.0%" in QToolTip.text() and "▶2" in QToolTip.text()
    QToolTip.hideText()


def test_view_rejects_mismatched_pieces(qtbot):
    view = TokenTextView()
    qtbot.addWidget(view)
    with pytest.raises(ValueError, match="2 tokens but 1 text pieces"):
        view.append_tokens([tok(1, "a", 0.5), tok(2, "b", 0.5)], ["ab"])


def test_tooltip_gives_the_mass_outside_the_top_n():
    top = (TopLogprob(1, "a", b"a", math.log(0.5)), TopLogprob(2, "b", b"b", math.log(0.3)))
    from explorer.gui.widgets.tokens import mass_outside_top

    inside = tok(1, "a", 0.5, top=top)
    assert mass_outside_top(inside) == pytest.approx(0.2)
    outside = tok(9, "z", 0.05, rank=7, top=top)  # the chosen token is listed too, so it is not "outside"
    assert mass_outside_top(outside) == pytest.approx(0.15)
    assert f"outside the top 2: {format_percent(0.15)}" in token_tooltip_html(outside)


def test_token_menu_branches_here_resamples_or_forces_an_alternative(qtbot):
    view = TokenTextView()
    qtbot.addWidget(view)
    top = (TopLogprob(1, " Pacific", b" Pacific", math.log(0.6)), TopLogprob(2, " Atlantic", b" Atlantic",
                                                                              math.log(0.3)))
    view.set_tokens([tok(5, "The", 0.9), tok(1, " Pacific", 0.6, top=top)], ["The", " Pacific"])
    menu = view.token_menu(1)
    requests = []
    view.branch_requested.connect(lambda *args: requests.append(args))
    texts = [a.text() for a in menu.actions() if a.data()]
    assert texts[0].startswith("Branch here") and texts[1].startswith("Resample from here")
    assert texts[2:] == [f"Force “␣Atlantic” ({format_percent(0.3)})"]  # the chosen token is not offered
    for action in [a for a in menu.actions() if a.data()]:
        action.trigger()
    assert requests == [(2, None), (1, None), (1, 2)]
