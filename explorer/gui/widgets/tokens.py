"""Token-level display shared by the rollout panes and the scoring panel.

- the hover tooltip (a pure function: TokenInfo -> HTML; with a reference policy's facts it sets pi beside pi_ref),
- mapping a text onto its tokens (pieces: one string per token whose concatenation is the text),
- TokenTextView: a read-only text view that appends shaded tokens and knows which token is under the mouse.
"""

from __future__ import annotations

import html
import math
from bisect import bisect_right
from typing import Optional, Sequence

from PySide6.QtCore import QEvent, QPoint, QRect, Qt, Signal
from PySide6.QtGui import QFontDatabase, QPalette, QTextCharFormat, QTextCursor, QTextOption
from PySide6.QtWidgets import QApplication, QMenu, QPlainTextEdit, QTextEdit, QToolTip, QWidget

from explorer.core.numbers import format_kl, format_logprob, format_percent, format_probability
from explorer.core.types import TokenInfo
from explorer.gui.widgets.style import blend, card_colours, is_dark, shade_colour, shade_level
from explorer.gui.widgets.view_options import ViewOptions


# -- token labels and the tooltip -----------------------------------------------------------------------------------
def token_label(text: str, raw: bytes) -> str:
    """A token made visible: whitespace shown as symbols, bytes that are not whole UTF-8 characters shown as hex."""
    try:
        text = raw.decode("utf-8") if raw else text
    except UnicodeDecodeError:
        return "".join(f"<{b:02X}>" for b in raw)
    if text == "":
        return "∅"
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")


def _bar_row(label: str, prob: float, chosen: bool, rank, colours: dict, bar_width: int) -> str:
    filled = max(1, int(round(prob * bar_width))) if prob > 0 else 0
    bar = colours["bar_chosen"] if chosen else colours["bar"]
    cells = f'<td width="{filled}" bgcolor="{bar}" height="9"></td>' if filled else ""
    if bar_width - filled > 0:
        cells += f'<td width="{bar_width - filled}" bgcolor="{colours["track"]}" height="9"></td>'
    bar_html = f'<table cellspacing="0" cellpadding="0" border="0"><tr>{cells}</tr></table>'
    weight = "font-weight:bold;" if chosen else ""
    row_bg = f' bgcolor="{colours["chosen_bg"]}"' if chosen else ""
    marker = "▶" if chosen else ""
    return (f'<tr{row_bg}><td style="color:{colours["muted"]}">{marker}{rank}</td>'
            f'<td style="{weight}white-space:pre">{html.escape(label)}</td>'
            f'<td valign="middle">{bar_html}</td>'
            f'<td align="right" style="{weight}">{format_percent(prob)}</td></tr>')


def token_tooltip_html(token: TokenInfo, position: Optional[int] = None, dark: bool = False,
                       bar_width: int = 110) -> str:
    """The hover card of one token: probability, logprob, rank, entropy, and the top-N alternatives with bars."""
    colours = card_colours(dark)
    muted = colours["muted"]
    where = f" · position {position}" if position is not None else ""
    head = (f'<div style="white-space:pre"><b style="font-size:large">{html.escape(token_label(token.token, token.bytes))}'
            f'</b> <span style="color:{muted}">id {token.id}{where}</span></div>')
    facts = [
        ("probability", f"<b>{format_percent(token.prob)}</b>"),
        ("log p", format_logprob(token.logprob)),
        ("rank", str(token.rank)),
        ("entropy", f"{token.entropy:.3f} nats" if token.entropy is not None and math.isfinite(token.entropy)
         else "unknown (only the top N is known)"),
    ]
    if token.sampling_logprob is not None:
        sp = math.exp(token.sampling_logprob) if math.isfinite(token.sampling_logprob) else 0.0
        facts.append(("sampler p", format_percent(sp)))
    fact_rows = "".join(f'<tr><td style="color:{muted}">{k}</td><td>&nbsp;{v}</td></tr>' for k, v in facts)
    parts = [head, f'<table cellspacing="0" cellpadding="1">{fact_rows}</table>']
    if token.ref_logprob is not None:
        parts.append(_reference_html(token, colours, bar_width))
    elif token.top:
        rows = _top_rows(token, token.top, token.prob, token.rank, colours, bar_width)
        rest = mass_outside_top(token)
        parts.append(f'<div style="color:{muted}">top {len(token.top)} alternatives</div>'
                     f'<table cellspacing="2" cellpadding="0">{"".join(rows)}</table>'
                     f'<div style="color:{muted}">outside the top {len(token.top)}: {format_percent(rest)}</div>'
                     f'<div style="color:{muted}">right-click: branch here, or force an alternative</div>')
    return "".join(parts)


def _top_rows(token: TokenInfo, top, own_prob: float, own_rank, colours: dict, bar_width: int) -> list[str]:
    """One bar row per listed alternative, the token taken marked; appended at its own rank when not listed."""
    rows = []
    chosen_listed = False
    for rank, alt in enumerate(top, start=1):
        chosen = alt.id == token.id
        chosen_listed |= chosen
        prob = math.exp(alt.logprob) if alt.logprob is not None and math.isfinite(alt.logprob) else 0.0
        rows.append(_bar_row(token_label(alt.token, alt.bytes), prob, chosen, rank, colours, bar_width))
    if not chosen_listed:
        rows.append(_bar_row(token_label(token.token, token.bytes), own_prob, True, own_rank, colours, bar_width))
    return rows


def _reference_html(token: TokenInfo, colours: dict, bar_width: int) -> str:
    """pi against pi_ref at this token: pi_ref, the ratio and log-ratio, the KL here, and both top-N lists side by
    side, the token taken marked in both."""
    muted = colours["muted"]
    ratio = token.log_ratio
    ref_prob = math.exp(token.ref_logprob) if math.isfinite(token.ref_logprob) else 0.0
    if ratio != ratio:  # both policies give the token 0
        times = "—"
    elif ratio > 700:  # exp overflows a double: pi_ref gives the token (next to) nothing
        times = "×∞" if math.isinf(ratio) else f"×e<sup>{ratio:.0f}</sup>"
    else:
        times = "×" + format_probability(ratio, html_markup=True)
    if ratio == ratio and ratio > 0:
        verdict = "the policy finds it likelier than the reference"
    elif ratio == ratio and ratio < 0:
        verdict = "the policy finds it less likely than the reference"
    else:
        verdict = ""
    facts = [
        ("π_ref", f"<b>{format_percent(ref_prob)}</b>"),
        ("π / π_ref", f"{times}" + (f' <span style="color:{muted}">{verdict}</span>' if verdict else "")),
        ("log π − log π_ref", format_logprob(ratio)),
        # evaluated without a KL: the policy is on a server, which sends no full rows (unknown, not 0)
        ("KL(π || π_ref) here", f"{format_kl(token.kl)} nats" if token.kl is not None else "unavailable"),
    ]
    fact_rows = "".join(f'<tr><td style="color:{muted}">{k}</td><td>&nbsp;{v}</td></tr>' for k, v in facts)
    parts = [f'<div style="color:{muted};margin-top:4px">against the reference policy π_ref</div>'
             f'<table cellspacing="0" cellpadding="1">{fact_rows}</table>']
    if token.top or token.ref_top:
        narrow = max(40, bar_width * 6 // 10)  # two lists side by side: shorter bars keep the card narrow
        own = _top_rows(token, token.top, token.prob, token.rank, colours, narrow) if token.top else []
        # the token's rank under pi_ref is not recorded: an unlisted token shows without one
        ref = _top_rows(token, token.ref_top, ref_prob, "·", colours, narrow) if token.ref_top else []
        cells = []
        for title, rows in ((f"π top {len(token.top)}", own), (f"π_ref top {len(token.ref_top)}", ref)):
            cells.append(f'<td valign="top"><div style="color:{muted}">{title}</div>'
                         f'<table cellspacing="2" cellpadding="0">{"".join(rows)}</table></td>')
        parts.append(f'<table cellspacing="0" cellpadding="0"><tr>{cells[0]}<td>&nbsp;&nbsp;</td>{cells[1]}</tr>'
                     '</table>')
        if token.top and token.ref_top_id is not None and token.top[0].id != token.ref_top_id:
            parts.append(f'<div style="color:{muted}">the two policies prefer different tokens here</div>')
        if token.top:
            parts.append(f'<div style="color:{muted}">outside π\'s top {len(token.top)}: '
                         f'{format_percent(mass_outside_top(token))}</div>'
                         f'<div style="color:{muted}">right-click: branch here, or force an alternative</div>')
    return "".join(parts)


def mass_outside_top(token: TokenInfo) -> float:
    """Probability of every token outside the top-N alternatives (and not the chosen one): 1 - what is listed."""
    listed = {alt.id: alt.logprob for alt in token.top}
    listed.setdefault(token.id, token.logprob)
    total = math.fsum(math.exp(lp) for lp in listed.values() if lp is not None and math.isfinite(lp))
    return min(max(1.0 - total, 0.0), 1.0)


# -- text <-> tokens ------------------------------------------------------------------------------------------------
def _u16len(s: str) -> int:
    """Length in UTF-16 code units: Qt document positions count these, Python counts code points."""
    if s.isascii():
        return len(s)
    return len(s) + sum(1 for ch in s if ord(ch) > 0xFFFF)


# -- the view -------------------------------------------------------------------------------------------------------
class TokenTextView(QPlainTextEdit):
    """Read-only text made of tokens; each token's background shows its probability (or its entropy, or its log-ratio
    to a reference policy)."""

    token_clicked = Signal(int)  # token index
    branch_requested = Signal(int, object)  # position to keep up to (exclusive), forced token id or None

    def __init__(self, parent: Optional[QWidget] = None, options: Optional[ViewOptions] = None):
        """options: the views' (their shading); a view on its own gets options of its own."""
        super().__init__(parent)
        self.options = options if options is not None else ViewOptions(self)
        self.options.changed.connect(self._on_option_changed)
        self._tokens: list[TokenInfo] = []
        self._starts: list[int] = []  # UTF-16 offset where each token's text begins
        self._levels: list[int] = []
        self._length = 0  # UTF-16 length of the document text
        self._formats: dict[tuple[str, int], QTextCharFormat] = {}
        self._format_palette_key = None
        self._hover = -1
        self._marked = -1
        self._press_pos: Optional[QPoint] = None
        self.setReadOnly(True)
        self.setUndoRedoEnabled(False)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.viewport().setMouseTracking(True)
        self.viewport().setCursor(Qt.CursorShape.ArrowCursor)

    # -- content ----------------------------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.options.shading

    @property
    def token_count(self) -> int:
        return len(self._tokens)

    def token(self, index: int) -> TokenInfo:
        return self._tokens[index]

    def text(self) -> str:
        return self.toPlainText()

    def clear_tokens(self) -> None:
        self._tokens.clear()
        self._starts.clear()
        self._levels.clear()
        self._length = 0
        self._hover = self._marked = -1
        self.setExtraSelections([])
        self.clear()

    def set_tokens(self, tokens: Sequence[TokenInfo], pieces: Sequence[str]) -> None:
        self.clear_tokens()
        self.append_tokens(tokens, pieces)

    def append_tokens(self, tokens: Sequence[TokenInfo], pieces: Sequence[str]) -> None:
        """Append tokens whose texts are `pieces` (one per token, possibly empty), shaded; follows the end if the
        view was scrolled to the bottom."""
        if len(tokens) != len(pieces):
            raise ValueError(f"{len(tokens)} tokens but {len(pieces)} text pieces")
        if not tokens:
            return
        bar = self.verticalScrollBar()
        # follow the end only once the reader went there: a new pane opens at the start of its text
        follow = bar.value() > 0 and bar.value() >= bar.maximum() - 2
        keep = bar.value()
        was_empty = self._length == 0
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.beginEditBlock()
        run_text: list[str] = []
        run_level = None
        for token, piece in zip(tokens, pieces):
            level = self._level(token)
            self._tokens.append(token)
            self._starts.append(self._length)
            self._levels.append(level)
            if not piece:
                continue
            self._length += _u16len(piece)
            if level != run_level and run_text:  # equal neighbours share one insert: fewer layout passes
                cursor.insertText("".join(run_text), self._format(run_level))
                run_text = []
            run_level = level
            run_text.append(piece)
        if run_text:
            cursor.insertText("".join(run_text), self._format(run_level))
        cursor.endEditBlock()
        if was_empty:  # the view's own cursor would sit at the end and drag the view along with the text
            self.moveCursor(QTextCursor.MoveOperation.Start)
        bar.setValue(bar.maximum() if follow else keep)

    def _on_option_changed(self, name: str) -> None:
        if name == "shading":
            self._levels = [self._level(t) for t in self._tokens]
            self._reformat()

    def update_tokens(self, tokens: Sequence[TokenInfo]) -> None:
        """The same tokens (the same ids and text) with new facts: a reference policy evaluated them, or its facts were
        cleared. The text stays; only the tokens whose shade changed are re-shaded, and the tooltips read the new
        facts."""
        if len(tokens) > len(self._tokens):
            raise ValueError(f"{len(tokens)} tokens to update but the view shows {len(self._tokens)}")
        changed = []
        for index, token in enumerate(tokens):
            if token.id != self._tokens[index].id:
                raise ValueError(f"token {index} is {self._tokens[index].id} in the view, not {token.id}")
            self._tokens[index] = token
            level = self._level(token)
            if level != self._levels[index]:
                self._levels[index] = level
                changed.append(index)
        if changed:
            self._reformat(changed)

    def _level(self, token: TokenInfo) -> int:
        return shade_level(self.options.shading, token.prob, token.entropy, token.log_ratio)

    def _palette_key(self):
        pal = self.palette()
        return pal.color(QPalette.ColorRole.Base).rgba(), pal.color(QPalette.ColorRole.Text).rgba()

    def _format(self, level: int) -> QTextCharFormat:
        key = self._palette_key()
        if key != self._format_palette_key:
            self._formats.clear()
            self._format_palette_key = key
        mode = self.options.shading
        fmt = self._formats.get((mode, level))
        if fmt is None:
            fmt = QTextCharFormat()
            colour = shade_colour(mode, level, self.palette())
            if colour is not None:
                fmt.setBackground(colour)
            self._formats[(mode, level)] = fmt
        return fmt

    def _reformat(self, indices: Optional[Sequence[int]] = None) -> None:
        """Re-shade tokens in place (mode or palette changed: all of them; new facts: `indices`, ascending): runs of
        neighbours of equal level get one format each."""
        cursor = QTextCursor(self.document())
        formats: dict[int, QTextCharFormat] = {}  # _format checks the palette on every call: once per level here
        cursor.beginEditBlock()
        order = range(len(self._tokens)) if indices is None else indices
        n = len(order)
        i = 0
        while i < n:
            j = i + 1
            while j < n and order[j] == order[j - 1] + 1 and self._levels[order[j]] == self._levels[order[i]]:
                j += 1
            first, last = order[i], order[j - 1]
            start = self._starts[first]
            end = self._starts[last + 1] if last + 1 < len(self._starts) else self._length
            if end > start:
                cursor.setPosition(start)
                cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
                level = self._levels[first]
                fmt = formats.get(level)
                if fmt is None:
                    fmt = formats[level] = self._format(level)
                cursor.setCharFormat(fmt)
            i = j
        cursor.endEditBlock()

    def changeEvent(self, event):  # noqa: N802 (Qt override)
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and self._tokens:
            self._reformat()
            self._update_marks()

    # -- geometry ---------------------------------------------------------------------------------------------------
    def token_span(self, index: int) -> tuple[int, int]:
        """Document positions [start, end) of a token's text (empty for a token that completes nothing)."""
        end = self._starts[index + 1] if index + 1 < len(self._starts) else self._length
        return self._starts[index], end

    def token_rect(self, index: int) -> QRect:
        """Viewport rectangle around the first character of a token (tests click here; tooltips anchor here)."""
        start, end = self.token_span(index)
        cursor = QTextCursor(self.document())
        cursor.setPosition(start)
        left = self.cursorRect(cursor)
        cursor.setPosition(min(start + 1, max(end, start)))
        right = self.cursorRect(cursor)
        width = right.left() - left.left() if right.top() == left.top() else self.fontMetrics().averageCharWidth()
        return QRect(left.left(), left.top(), max(width, 1), left.height())

    def token_at(self, pos: QPoint) -> Optional[int]:
        """The token under a viewport point, or None (margins, past the end of a line, empty view)."""
        if not self._tokens or self._length == 0:
            return None
        cursor = self.cursorForPosition(pos)
        p = cursor.position()
        rect = self.cursorRect(cursor)
        char = p - 1 if pos.x() < rect.left() else p  # cursorForPosition snaps to the nearest gap between chars
        if char < 0 or char >= self._length:
            return None
        cursor.setPosition(char)
        left = self.cursorRect(cursor)
        if not (left.top() <= pos.y() < left.bottom() + 1):
            return None
        if self.document().characterAt(char) in ("\u2029", "\n"):  # the end of a line is not a token to hover
            return None
        cursor.setPosition(char + 1)
        right = self.cursorRect(cursor)
        if right.top() == left.top() and not (left.left() <= pos.x() < right.left()):
            return None
        return bisect_right(self._starts, char) - 1

    # -- marks: the hovered token (underline) and the token scrolled to (highlight) ---------------------------------
    def mark_token(self, index: int) -> None:
        """Highlight one token and scroll it into view (-1 clears)."""
        self._marked = index if 0 <= index < len(self._tokens) else -1
        self._update_marks()
        if self._marked >= 0:
            cursor = self.textCursor()
            cursor.setPosition(self.token_span(self._marked)[0])
            self.setTextCursor(cursor)
            self.ensureCursorVisible()

    def _update_marks(self) -> None:
        selections = []
        pal = self.palette()
        for index, strong in ((self._marked, True), (self._hover, False)):
            if index < 0 or index >= len(self._tokens):
                continue
            start, end = self.token_span(index)
            if end <= start:
                continue
            sel = QTextEdit.ExtraSelection()
            cursor = QTextCursor(self.document())
            cursor.setPosition(start)
            cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
            sel.cursor = cursor
            fmt = QTextCharFormat()
            if strong:
                fmt.setBackground(pal.color(QPalette.ColorRole.Highlight))
                fmt.setForeground(pal.color(QPalette.ColorRole.HighlightedText))
            else:
                fmt.setFontUnderline(True)
                fmt.setUnderlineColor(blend(pal.color(QPalette.ColorRole.Base), pal.color(QPalette.ColorRole.Text),
                                            0.85))
            sel.format = fmt
            selections.append(sel)
        self.setExtraSelections(selections)

    def _set_hover(self, index: int) -> None:
        if index != self._hover:
            self._hover = index
            self._update_marks()

    # -- mouse ------------------------------------------------------------------------------------------------------
    def viewportEvent(self, event):  # noqa: N802 (Qt override)
        if event.type() == QEvent.Type.ToolTip:
            index = self.token_at(event.pos())
            if index is None:
                QToolTip.hideText()
                event.ignore()
            else:
                html_text = token_tooltip_html(self._tokens[index], index, is_dark(self.palette()))
                QToolTip.showText(event.globalPos(), html_text, self.viewport(), self.token_rect(index))
            return True
        if event.type() == QEvent.Type.Leave:
            self._set_hover(-1)
        return super().viewportEvent(event)

    def mouseMoveEvent(self, event):  # noqa: N802 (Qt override)
        super().mouseMoveEvent(event)
        index = self.token_at(event.position().toPoint())
        self._set_hover(-1 if index is None else index)

    def token_menu(self, index: int) -> QMenu:
        """Act on a token: branch after it, resample it, or force one of its top-N alternatives (mikupad-style).
        Each action emits branch_requested(position, forced token id or None)."""
        token = self._tokens[index]
        label = token_label(token.token, token.bytes)
        menu = QMenu(self)
        after = menu.addAction(f"Branch here: keep the text through “{label}”, sample the rest")
        after.setData(("branch", index + 1, None))
        resample = menu.addAction(f"Resample from here: keep the text before “{label}”")
        resample.setData(("branch", index, None))
        alternatives = [alt for alt in token.top if alt.id != token.id]
        if alternatives:
            menu.addSeparator()
            for alt in alternatives:
                prob = math.exp(alt.logprob) if alt.logprob is not None and math.isfinite(alt.logprob) else 0.0
                action = menu.addAction(f"Force “{token_label(alt.token, alt.bytes)}” ({format_percent(prob)})")
                action.setData(("branch", index, alt.id))
        for action in menu.actions():
            data = action.data()
            if data:
                action.triggered.connect(lambda _checked=False, d=data: self.branch_requested.emit(d[1], d[2]))
        menu.addSeparator()
        copy = menu.addAction("Copy")
        copy.setEnabled(self.textCursor().hasSelection())
        copy.triggered.connect(self.copy)
        return menu

    def contextMenuEvent(self, event):  # noqa: N802 (Qt override)
        index = self.token_at(self.viewport().mapFrom(self, event.pos()))
        if index is None:
            super().contextMenuEvent(event)
            return
        self.token_menu(index).popup(event.globalPos())

    def mousePressEvent(self, event):  # noqa: N802 (Qt override)
        self._press_pos = event.position().toPoint()
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event):  # noqa: N802 (Qt override)
        super().mouseReleaseEvent(event)
        pos = event.position().toPoint()
        pressed, self._press_pos = self._press_pos, None
        if event.button() != Qt.MouseButton.LeftButton or pressed is None:
            return
        if (pos - pressed).manhattanLength() >= QApplication.startDragDistance():
            return  # a drag selects text; only a click picks a token
        index = self.token_at(pos)
        if index is not None:
            self.token_clicked.emit(index)

