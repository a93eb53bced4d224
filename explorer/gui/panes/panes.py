"""Side-by-side rollout panes: one per rollout of the selected query, streaming as tokens arrive."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtGui import QFont, QGuiApplication, QPainter, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from explorer.core.session import Session
from explorer.core.numbers import (format_implicit_reward, format_kl, format_logprob, format_perplexity,
                                   format_probability, sequence_logprob_of)
from explorer.gui.widgets.style import SHADING_MODES, ShadingLegend, accent, finish_colour, muted_text
from explorer.core.token_text import decode_pieces, fit_pieces
from explorer.gui.widgets.tokens import TokenTextView
from explorer.gui.widgets.view_options import ViewOptions

SORT_KEYS = ("index", "logprob", "reward", "advantage")
COMPACT_ABOVE = 8  # more panes than this: compact mode
PANE_MIN_WIDTH = 280
COMPACT_PANE_WIDTH = 190
_NO_BREAK = "\u2060"  # word joiner: no line break here
_FINISH_TEXT = {"stop": "stop", "length": "length", "stop_string": "stop string", "cancelled": "cancelled"}


def reference_shading_tip(description: Optional[str]) -> str:
    """What the log-ratio shading shows in this session, or why it shows nothing (the menu and the panes say it)."""
    if description is None:
        return ("Shade each token by log pi - log pi_ref against a reference policy. This session has no reference "
                "policy: choose one in the side panel; until it has evaluated the rollouts every token stays "
                "unshaded.")
    return (f"Shade each token by log pi - log pi_ref: green where the policy finds it likelier than the reference "
            f"({description}), pink where less likely")


class RolloutPane(QFrame):
    """One rollout: a header of facts and the shaded text, appended as the session grows it."""

    token_clicked = Signal(str, int)
    branch_requested = Signal(str, int, object)  # rollout id, position, forced token id or None

    def __init__(self, session: Session, live, options: ViewOptions, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self._session = session
        self._live = live
        self.rollout_id: str = live.id
        self._compact = False
        self._highlighted = False
        self._final = None  # the Rollout last rendered, once the rollout finished
        self._options = options  # the implicit reward's beta, the shading
        options.changed.connect(self._on_option_changed)
        self._n_tokens = 0  # tokens of live.tokens already in the view
        self._header_key = None

        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.stats = QLabel()
        self.stats.setTextFormat(Qt.TextFormat.RichText)
        self.stats.setWordWrap(True)
        self.copy_button = QToolButton()
        self.copy_button.setText("Copy")
        self.copy_button.setToolTip("Copy this rollout's text to the clipboard")
        self.copy_button.setAutoRaise(True)
        self.copy_button.clicked.connect(self.copy_text)
        self.view = TokenTextView(self, options)
        self.view.setFrameShape(QFrame.Shape.NoFrame)
        self.view.token_clicked.connect(lambda index: self.token_clicked.emit(self.rollout_id, index))
        self.view.branch_requested.connect(lambda position, forced: self.branch_requested.emit(
            self.rollout_id, position, forced))

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.title, 1)
        top.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 4, 4)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addWidget(self.stats)
        layout.addWidget(self.view, 1)
        self.set_compact(False)

    # -- state ------------------------------------------------------------------------------------------------------
    @property
    def index(self) -> int:
        return self._live.index

    @property
    def logprob(self) -> float:
        return self._final.logprob if self._final is not None else self._live.logprob

    @property
    def compact(self) -> bool:
        return self._compact

    @property
    def final(self):
        return self._final

    def text(self) -> str:
        return self.view.text()

    def copy_text(self) -> None:
        QGuiApplication.clipboard().setText(self._live.text)

    def set_compact(self, compact: bool) -> None:
        self._compact = compact
        font = QFont(self.font())
        if compact:
            font.setPointSizeF(max(font.pointSizeF() - 1.5, 6.5))
        self.title.setFont(font)
        self.stats.setFont(font)
        self.copy_button.setText("Copy")
        view_font = QFont(self.view.font())
        base = QFont(self.font()).pointSizeF()
        view_font.setPointSizeF(max(base - 1.0, 6.5) if compact else base)
        self.view.setFont(view_font)
        if compact:
            self.setMinimumWidth(COMPACT_PANE_WIDTH)
            self.setMaximumWidth(COMPACT_PANE_WIDTH + 60)
        else:
            self.setMinimumWidth(PANE_MIN_WIDTH)
            self.setMaximumWidth(16777215)
        self._header_key = None
        self._update_header()

    def _on_option_changed(self, name: str) -> None:
        if name == "beta":  # the implicit reward beta * log-ratio the header shows
            self._update_header()

    def set_highlighted(self, on: bool) -> None:
        if on != self._highlighted:
            self._highlighted = on
            self.update()

    def paintEvent(self, event):  # noqa: N802 (Qt override)
        super().paintEvent(event)
        if self._highlighted:
            painter = QPainter(self)
            painter.setPen(QPen(accent(self.palette()), 3))
            painter.drawRect(self.rect().adjusted(1, 1, -2, -2))
            painter.end()

    # -- streaming --------------------------------------------------------------------------------------------------
    def refresh(self) -> tuple[bool, bool]:
        """Pull what the session has beyond what the view shows. Returns (anything changed, finished changed)."""
        live = self._live
        final = live.final
        if final is not self._final:
            self._final = final
            if final is not None:
                self._take_final(final)
                self._update_header()
                return True, True
        if final is not None:
            return self._update_header(), False
        tokens = live.tokens
        if len(tokens) == self._n_tokens:
            return self._update_header(), False
        # the session keeps one text delta per token (the engine's, empty while a character is split): no decoding
        new_tokens, pieces = tokens[self._n_tokens:], live.deltas[self._n_tokens:]
        self.view.append_tokens(new_tokens, pieces)
        self._n_tokens = len(tokens)
        self._update_header()
        return True, False

    def _take_final(self, final) -> None:
        """The session swapped in the finished Rollout (at its end, or annotated by a reference policy later): append
        its tail if it extends what is shown, else redraw; the tokens shown become its own (their facts may be
        new)."""
        shown = self.view.text()
        count = self.view.token_count
        if count <= len(final.tokens) and final.text.startswith(shown) and all(
                self.view.token(i).id == final.tokens[i].id for i in range(count)):
            self.view.update_tokens(final.tokens[:count])
            tail_tokens = final.tokens[count:]
            tail_text = final.text[len(shown):]
            if tail_tokens or tail_text:
                pieces = fit_pieces(decode_pieces(tail_tokens), tail_text)
                if not tail_tokens:  # text without tokens: nothing to attribute it to but the last token; redraw
                    self._redraw(final)
                else:
                    self.view.append_tokens(tail_tokens, pieces)
        else:
            self._redraw(final)
        self._n_tokens = len(final.tokens)

    def _redraw(self, final) -> None:
        self.view.set_tokens(final.tokens, fit_pieces(decode_pieces(final.tokens), final.text))

    # -- header -----------------------------------------------------------------------------------------------------
    def _finish_text(self) -> tuple[str, Optional[str]]:
        if self._final is not None and self._final.finish_reason:
            reason = self._final.finish_reason
            return _FINISH_TEXT.get(reason, reason), reason
        return ("streaming…" if self._session.running else "unfinished"), None

    def _update_header(self) -> bool:
        final = self._final
        n = len(final.tokens) if final is not None else self.view.token_count
        finish, reason = self._finish_text()
        reward = final.reward if final is not None else None
        advantage = final.advantage if final is not None else None
        error = final.reward_error if final is not None else None
        ratio = final.log_ratio if final is not None else None
        mean_kl = final.mean_kl if final is not None else None
        beta = self._options.beta
        key = (n, finish, reward, advantage, error, self.logprob, ratio, mean_kl, beta if ratio is not None
               else None, self._compact, self.palette().cacheKey())
        if key == self._header_key:
            return False
        self._header_key = key
        pal = self.palette()
        muted = muted_text(pal).name()
        live = self._live
        logprob = self.logprob
        ppl = sequence_logprob_of(logprob, n).perplexity
        finish_html = (f'<span style="color:{finish_colour(reason).name()};font-weight:bold">{finish}</span>'
                       if reason else f'<i style="color:{muted}">{finish}</i>')
        branch = ""
        if live.parent_id is not None:
            parent = live.parent_id.rsplit(".", 1)[-1]
            # plain ASCII: a fork glyph is missing from many fonts and shows as a box
            branch = f' <span style="color:{muted}">from {parent} @{live.branch_position}</span>'
        if self._compact:  # shorter words, the same key facts: seed and pi(y|x) included
            self.title.setText(f"<b>#{live.index}</b>{branch} <span style='color:{muted}'>s{live.seed} · {n} tok"
                               f"</span> {finish_html}")
            facts = [f"π {format_probability(logprob, html_markup=True) if n else '—'}",
                     f"log π {format_logprob(logprob)}", f"ppl {format_perplexity(ppl)}"]
        else:
            self.title.setText(f"<b>#{live.index}</b>{branch} <span style='color:{muted}'>seed {live.seed} · "
                               f"{n} tokens ·</span> {finish_html}")
            facts = [f"log π {format_logprob(logprob)}",
                     f"π(y|x) {format_probability(logprob, html_markup=True) if n else '—'}",
                     f"ppl {format_perplexity(ppl)}"]
        if reward is not None:
            facts.append(f"R {reward:.3g}")
        if advantage is not None:
            facts.append(f"A {advantage:+.3g}")
        if final is not None and final.reward_error:
            facts.append(f'<span style="color:{finish_colour("cancelled").name()}">reward error</span>')
        if ratio is not None:  # against the reference policy
            implicit = format_implicit_reward(beta * ratio)
            facts += [f"log π/{_NO_BREAK}π_ref {format_logprob(ratio)}",  # a line may break after "/" otherwise
                      f"KL {format_kl(mean_kl)}/{_NO_BREAK}tok" if self._compact
                      else f"KL {format_kl(mean_kl)} per token",
                      f"impl. R {implicit}" if self._compact else f"implicit R {implicit}"]
        # each fact stays on one line; the row wraps between facts only
        self.stats.setText(f" <span style='color:{muted}'>·</span> ".join(f.replace(" ", "&nbsp;") if "<" not in f
                                                                           else f for f in facts))
        tip = [f"rollout {live.id}, index {live.index}, seed {live.seed}", f"{n} tokens, {finish}",
               f"log pi(y|x) = {format_logprob(logprob)}", f"pi(y|x) = {format_probability(logprob)}",
               f"perplexity = {format_perplexity(ppl)}"]
        if ratio is not None:
            tip += [f"log pi(y|x) - log pi_ref(y|x) = {format_logprob(ratio)}",
                    f"mean KL(pi || pi_ref) per token = {format_kl(mean_kl)} nats",
                    f"implicit reward beta * log-ratio = {format_implicit_reward(beta * ratio)} (DPO's, "
                    f"beta {beta:g})"]
        if final is not None and final.reward_error:
            tip.append(f"reward error: {final.reward_error}")
        self.stats.setToolTip("\n".join(tip))
        return True

    def sort_value(self, key: str):
        """Ascending sort key: most likely / highest reward first; missing values last; ties by index."""
        if key == "logprob":
            return (0, -self.logprob, self.index)
        if key in ("reward", "advantage"):
            value = getattr(self._final, key, None) if self._final is not None else None
            return (1, 0.0, self.index) if value is None else (0, -value, self.index)
        return (0, self.index, 0)


class RolloutPanes(QWidget):
    """The panes of one query group, side by side, scrolling horizontally; a legend and the shading/sort choices."""

    token_clicked = Signal(str, int)  # rollout id, token position
    branch_requested = Signal(str, int, object)  # rollout id, position, forced token id or None (a pane's menu)
    sort_changed = Signal(str)

    def __init__(self, options: Optional[ViewOptions] = None, parent: Optional[QWidget] = None):
        """options: the views' shading and beta (panes on their own get options of their own)."""
        super().__init__(parent)
        self.options = options if options is not None else ViewOptions(self)
        self._session: Optional[Session] = None
        self._group_id: Optional[str] = None
        self._panes: dict[str, RolloutPane] = {}
        self._order: list[str] = []
        self._sort = "index"
        self._highlighted: set[str] = set()
        self._compact_choice: Optional[bool] = None  # None: compact when there are more than COMPACT_ABOVE panes
        self._pane_budget: Optional[int] = None  # most panes made per refresh; None: all at once
        self._shown: Optional[list[str]] = None  # rollouts to show as panes (rows picked in the table); None: all

        self.legend = ShadingLegend(self.options, self)
        self.shading_box = QComboBox()
        for mode, text in zip(SHADING_MODES, ("Shade by probability", "Shade by entropy",
                                              "Shade by log-ratio π/π_ref")):
            self.shading_box.addItem(text, mode)
        self.shading_box.setToolTip("Colour tokens by their raw probability, by the entropy at that step, or by how "
                                    "much likelier the policy finds them than a reference policy")
        self.set_reference_policy(None)
        # the box is an editor of the views' shading: it shows the option and sets it
        self.shading_box.currentIndexChanged.connect(lambda _: self.options.set_shading(self.shading_box.currentData()))
        self.options.changed.connect(self._on_option_changed)
        self.sort_box = QComboBox()
        for label, key in (("Order: index", "index"), ("Order: log π (best first)", "logprob"),
                           ("Order: reward", "reward"), ("Order: advantage", "advantage")):
            self.sort_box.addItem(label, key)
        self.sort_box.currentIndexChanged.connect(lambda _: self.set_sort(self.sort_box.currentData()))
        self.toolbar = QWidget()
        bar = QHBoxLayout(self.toolbar)
        bar.setContentsMargins(2, 0, 2, 0)
        bar.addWidget(self.legend)
        bar.addStretch(1)
        bar.addWidget(self.shading_box)
        bar.addWidget(self.sort_box)

        self.placeholder = QLabel("No rollouts to show yet: pick a query and press Run.")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setStyleSheet("color: palette(mid);")
        self._container = QWidget()
        self._row = QHBoxLayout(self._container)
        self._row.setContentsMargins(0, 0, 0, 0)
        self._row.setSpacing(6)
        self._scroll = QScrollArea()
        self._scroll.setWidgetResizable(True)
        self._scroll.setFrameShape(QFrame.Shape.NoFrame)
        self._scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._scroll.setWidget(self._container)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.placeholder, 1)
        layout.addWidget(self._scroll, 1)
        self._scroll.hide()

    # -- public API -------------------------------------------------------------------------------------------------
    @property
    def group_id(self) -> Optional[str]:
        return self._group_id

    @property
    def sort_key(self) -> str:
        return self._sort

    def panes(self) -> list[RolloutPane]:
        """The panes in their on-screen order, left to right."""
        return [self._panes[rid] for rid in self._order]

    def pane(self, rollout_id: str) -> Optional[RolloutPane]:
        return self._panes.get(rollout_id)

    def show_group(self, session: Optional[Session], group_id: Optional[str]) -> None:
        for pane in self._panes.values():
            self._row.removeWidget(pane)
            pane.deleteLater()
        self._panes.clear()
        self._order.clear()
        self._highlighted.clear()
        self._shown = None
        self._session = session
        self._group_id = group_id if session is not None else None
        self.refresh()
        self._update_visibility()

    def refresh(self) -> None:
        session, group_id = self._session, self._group_id
        if session is None or group_id is None:
            return
        lives = self._wanted(session.live_rollouts(group_id))
        if len(lives) != len(self._panes):
            self._add_panes(lives)
        resort = False
        for rid in self._order:
            _, finished = self._panes[rid].refresh()
            resort |= finished
        if resort and self._sort != "index":
            self._apply_sort()

    def _on_option_changed(self, name: str) -> None:
        if name == "shading":
            with QSignalBlocker(self.shading_box):
                self.shading_box.setCurrentIndex(SHADING_MODES.index(self.options.shading))

    def set_reference_policy(self, description: Optional[str]) -> None:
        """What the session's reference policy is (None: it has none): the legend and the shading choice say it. The
        log-ratio shading stays on offer without one (a run may be about to be evaluated); it says why nothing is
        shaded then."""
        self.legend.set_reference_policy(description)
        tip = reference_shading_tip(description)
        self.shading_box.setItemData(SHADING_MODES.index("log_ratio"), tip, Qt.ItemDataRole.ToolTipRole)

    def set_sort(self, key: str) -> None:
        if key not in SORT_KEYS:
            raise ValueError(f"unknown sort key {key!r}; expected one of {', '.join(SORT_KEYS)}")
        with QSignalBlocker(self.sort_box):
            self.sort_box.setCurrentIndex(SORT_KEYS.index(key))
        changed = key != self._sort
        self._sort = key
        self._apply_sort()  # also on an unchanged key: logprobs move while streaming, a re-pick re-sorts
        if changed:
            self.sort_changed.emit(key)

    def highlight_rollouts(self, ids) -> None:
        self._highlighted = set(ids)
        first = None
        for rid in self._order:
            on = rid in self._highlighted
            self._panes[rid].set_highlighted(on)
            if on and first is None:
                first = self._panes[rid]
        if first is not None:
            self._scroll.ensureWidgetVisible(first, 20, 0)

    def scroll_to_token(self, rollout_id: str, position: int) -> None:
        pane = self._panes.get(rollout_id)
        if pane is None:
            return
        self._scroll.ensureWidgetVisible(pane, 20, 0)
        if 0 <= position < pane.view.token_count:
            pane.view.mark_token(position)

    def show_only(self, rollout_ids: Optional[list[str]]) -> None:
        """Show just these rollouts as panes (the rows selected in the rollout table); None shows every rollout."""
        shown = list(rollout_ids) if rollout_ids is not None else None
        if shown == self._shown:
            return
        self._shown = shown
        wanted = None if self._shown is None else set(self._shown)
        for rid in list(self._order):
            if wanted is not None and rid not in wanted:
                pane = self._panes.pop(rid)
                self._order.remove(rid)
                self._row.removeWidget(pane)
                pane.deleteLater()
        self.refresh()
        self._apply_compact()
        self._update_visibility()

    @property
    def shown_rollouts(self) -> Optional[list[str]]:
        return None if self._shown is None else list(self._shown)

    def _wanted(self, lives) -> list:
        if self._shown is None:
            return list(lives)
        wanted = set(self._shown)
        return [live for live in lives if live.id in wanted]

    def set_pane_budget(self, budget: Optional[int]) -> None:
        """Make at most `budget` new panes per refresh, the rest on the next ones: a run's start then never stalls
        the window for all its panes at once. None (the default) makes them all at once."""
        self._pane_budget = budget

    def set_compact(self, compact: Optional[bool]) -> None:
        """Force compact panes on or off; None goes back to automatic (compact for more than 8 panes)."""
        self._compact_choice = compact
        self._apply_compact()

    # -- internals --------------------------------------------------------------------------------------------------
    def _apply_compact(self, count: Optional[int] = None) -> None:
        """count: the panes there will be (some may not be made yet)."""
        count = len(self._panes) if count is None else count
        compact = self._compact_choice if self._compact_choice is not None else count > COMPACT_ABOVE
        for pane in self._panes.values():
            if pane.compact != compact:
                pane.set_compact(compact)

    def _add_panes(self, lives) -> None:
        new = [live for live in lives if live.id not in self._panes]
        for live in new[:self._pane_budget] if self._pane_budget is not None else new:
            pane = RolloutPane(self._session, live, self.options, self._container)
            pane.token_clicked.connect(self.token_clicked)
            pane.branch_requested.connect(self.branch_requested)
            pane.set_highlighted(live.id in self._highlighted)
            self._panes[live.id] = pane
            self._order.append(live.id)
            self._row.addWidget(pane, 1)
        self._apply_compact(len(lives))
        for pane in self._panes.values():  # new panes show what they have before the sort looks at them
            pane.refresh()
        self._apply_sort()
        self._update_visibility()

    def _apply_sort(self) -> None:
        order = sorted(self._order, key=lambda rid: self._panes[rid].sort_value(self._sort))
        if order == self._order:
            return
        self._order = order
        for rid in order:
            self._row.removeWidget(self._panes[rid])
        for rid in order:
            self._row.addWidget(self._panes[rid], 1)

    def _update_visibility(self) -> None:
        has = bool(self._panes)
        self._scroll.setVisible(has)
        self.placeholder.setVisible(not has)
        if not has:
            if self._group_id is None:
                text = "No rollouts to show yet: pick a query and press Run."
            elif self._shown is not None:
                text = "Select rows in the rollout table to show those rollouts here."
            else:
                text = "This query has no rollouts yet."
            self.placeholder.setText(text)
