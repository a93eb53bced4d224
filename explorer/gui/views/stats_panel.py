"""A small panel of the selected query's group statistics (explorer.core.rl.stats): diversity, rewards when there are
any, and the KL to a reference policy when the rollouts were evaluated under one, with the mismatch numbers trainers
log (this query's and the whole set's side by side). The window hands it the group whenever the tab changes or the
group's statistics are recomputed."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import (QFrame, QGridLayout, QLabel, QScrollArea, QStyle, QTabWidget, QVBoxLayout,
                               QWidget)

from explorer.core.rl.stats import STAT_DESCRIPTIONS, in_baseline
from explorer.core.numbers import format_kl
from explorer.core.types import QueryGroup, ReferenceInfo

# (stat name, label) in the order shown; two columns of label/value pairs
ROWS = (
    ("distinct_responses", "Distinct responses"),
    ("distinct_1", "Distinct-1"),
    ("distinct_2", "Distinct-2"),
    ("mean_first_divergence", "First divergence"),
    ("branch_mass_coverage", "Branch mass coverage"),
    ("mean_reward", "Mean reward"),
    ("reward_std", "Reward std"),
)
# against the reference policy: a block of their own under the others, shown only when the group has them
REFERENCE_ROWS = (
    ("mean_kl", "Mean KL"),
    ("kl_p99", "KL p99"),
    ("same_top_share", "Same top token"),
    ("top_disagreement_share", "Top disagreement"),
)
# the mismatch numbers (stats "mismatch.NAME"): one row each, this query's and the set's
MISMATCH_ROWS = (
    ("prob_diff_max", "|π − π_ref| max"),
    ("prob_diff_mean", "|π − π_ref| mean ± std"),
    ("prob_pearson", "Pearson r(π, π_ref)"),
    ("tis_clip_fraction", "Weights clipped at C"),
    ("ess", "Effective sample size"),
    ("kl_k1", "k1 = −log r"),
    ("kl_k2", "k2 = (log r)²/2"),
    ("kl_k3", "k3 = r − 1 − log r"),
    ("kl_exact", "Exact KL"),
)
MISMATCH_TIP = ("The sampler-versus-trainer gap over the tokens the sampler drew, r = π_ref / π of each token: what a "
                "trainer holding π_ref's weights would log (verl's rollout_probs_diff_*, TRL's truncated importance "
                "weights min(r, C), Schulman's KL estimators, each a mean per token, with its bias against the exact "
                "KL in brackets)")
UNAVAILABLE = "unavailable"  # a KL that cannot be known (a server sends no full rows): never shown as 0
_EMPTY = "—"


def format_mismatch(name: str, m: Optional[dict], has_kl: bool = True) -> str:
    """One mismatch number as the panel shows it (m: NAME -> value, without the "mismatch." prefix)."""
    if not m:
        return _EMPTY

    def number(x: Optional[float], digits: int = 3) -> str:
        return _EMPTY if x is None else "inf" if x == float("inf") else f"{x:.{digits}g}"

    value = m.get(name)
    if name == "prob_diff_mean":
        return f"{number(value)} ± {number(m.get('prob_diff_std'))}"
    if name == "prob_pearson":
        return number(value, 4)
    if name == "tis_clip_fraction":
        return _EMPTY if value is None else f"{100 * value:.1f}% (C = {m.get('tis_cap', 0):g})"
    if name == "ess":
        n = m.get("n_tokens")
        return _EMPTY if value is None or not n else f"{value:.1f} of {n:g} ({100 * value / n:.0f}%)"
    if name == "kl_exact":
        return number(value) if value is not None or has_kl else UNAVAILABLE
    if name in ("kl_k1", "kl_k2", "kl_k3"):
        exact = m.get("kl_exact")
        bias = (f" ({value - exact:+.2g})" if value is not None and exact is not None
                and value != float("inf") and exact != float("inf") else "")
        return number(value) + bias
    return number(value)


def mismatch_of(stats: Optional[dict]) -> dict:
    """The mismatch numbers of a stats dict (or of Session.set_mismatch), without their prefix."""
    return {k.partition(".")[2]: v for k, v in (stats or {}).items() if k.startswith("mismatch.")}


def format_stat(name: str, value: Optional[float], n_rollouts: Optional[int] = None) -> str:
    """How one statistic reads in the panel; None (undefined for this group) is a dash."""
    if value is None:
        return _EMPTY
    if name == "distinct_responses":
        return f"{int(value)} of {n_rollouts}" if n_rollouts is not None else f"{int(value)}"
    if name in ("distinct_1", "distinct_2"):
        return f"{value:.2f}"
    if name == "mean_first_divergence":
        return f"{value:.1f} tokens"
    if name == "branch_mass_coverage":
        return f"{100 * value:.0f}%"
    if name in ("mean_kl", "kl_p99"):
        return f"{format_kl(value)} nats"
    if name in ("same_top_share", "top_disagreement_share"):
        return f"{100 * value:.1f}%"
    return f"{value:.3g}"


class StatsPanel(QFrame):
    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._group: Optional[QueryGroup] = None  # the group shown; its stats are what the labels say
        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: palette(mid);")
        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(1)
        self.labels: dict[str, QLabel] = {}
        self.value_labels: dict[str, QLabel] = {}
        first_reference_row = (len(ROWS) + 1) // 2
        places = [divmod(i, 2) for i in range(len(ROWS))] + [
            (first_reference_row + i // 2, i % 2) for i in range(len(REFERENCE_ROWS))]
        for (name, text), (row, col) in zip(ROWS + REFERENCE_ROWS, places):
            label, value = QLabel(text + ":"), QLabel(_EMPTY)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            for w in (label, value):
                w.setToolTip(STAT_DESCRIPTIONS[name])
            grid.addWidget(label, row, 2 * col)
            grid.addWidget(value, row, 2 * col + 1)
            self.labels[name], self.value_labels[name] = label, value
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        self.mismatch_grid = QWidget()
        mismatch = QGridLayout(self.mismatch_grid)
        mismatch.setContentsMargins(0, 4, 0, 0)
        mismatch.setHorizontalSpacing(10)
        mismatch.setVerticalSpacing(1)
        self.mismatch_grid.setToolTip(MISMATCH_TIP)
        heading = QLabel("r = π_ref / π")
        heading.setToolTip(MISMATCH_TIP)
        heading.setStyleSheet("color: palette(mid);")
        mismatch.addWidget(heading, 0, 0)
        for col, text in ((1, "this query"), (2, "all queries")):
            head = QLabel(text)
            head.setAlignment(Qt.AlignmentFlag.AlignRight)
            head.setStyleSheet("color: palette(mid);")
            mismatch.addWidget(head, 0, col)
        self.mismatch_values: dict[str, tuple[QLabel, QLabel]] = {}
        for row, (name, text) in enumerate(MISMATCH_ROWS, start=1):
            label = QLabel(text + ":")
            label.setToolTip(STAT_DESCRIPTIONS[f"mismatch.{name}"])
            mismatch.addWidget(label, row, 0)
            cells = []
            for col in (1, 2):
                cell = QLabel(_EMPTY)
                cell.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
                cell.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                cell.setToolTip(label.toolTip())
                mismatch.addWidget(cell, row, col)
                cells.append(cell)
            self.mismatch_values[name] = (cells[0], cells[1])
        mismatch.setColumnStretch(1, 1)
        mismatch.setColumnStretch(2, 1)
        mismatch.setRowStretch(len(MISMATCH_ROWS) + 1, 1)
        # what pi_ref is, under the numbers measured against it
        self.reference = QLabel()
        self.reference.setWordWrap(True)
        self.reference.setTextFormat(Qt.TextFormat.PlainText)
        self.reference.setStyleSheet("color: palette(mid);")
        # two pages, the group's statistics and the mismatch numbers (there with a reference), each scrolling where
        # the window leaves it less height than it needs: squeezed, the rows would be drawn over each other
        statistics = QWidget()
        layout = QVBoxLayout(statistics)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(2)
        layout.addLayout(grid)
        layout.addWidget(self.note)
        layout.addStretch(1)
        self.mismatch_grid.setContentsMargins(6, 0, 6, 4)
        self._pages = (statistics, self.mismatch_grid)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        for page, name, tip in ((statistics, "Statistics", "Diversity, rewards and the KL to the reference policy"),
                                (self.mismatch_grid, "Sampler vs π_ref", MISMATCH_TIP)):
            scroll = QScrollArea()
            scroll.setFrameShape(QFrame.Shape.NoFrame)
            scroll.setWidgetResizable(True)
            scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # minimumSizeHint's width
            scroll.setWidget(page)
            self.tabs.addTab(scroll, name)
            self.tabs.setTabToolTip(self.tabs.count() - 1, tip)
        self.tabs.setCornerWidget(self.title, Qt.Corner.TopRightCorner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(2, 2, 2, 4)
        outer.setSpacing(2)
        outer.addWidget(self.tabs)
        outer.addWidget(self.reference)
        self.show_group(None)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt override)
        """As wide as the pages' numbers need (their scroll areas would give that up), as low as a few rows."""
        bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
        width = max(page.minimumSizeHint().width() for page in self._pages) + bar + 8
        return QSize(width, super().minimumSizeHint().height())

    @property
    def group_id(self) -> Optional[str]:
        return self._group.id if self._group is not None else None

    def value(self, name: str) -> Optional[float]:
        """The statistic shown, as a number (None when undefined or not computed yet)."""
        group = self._group
        return dict(group.stats).get(name) if group is not None and group.stats is not None else None

    def text(self, name: str) -> str:
        return self.value_labels[name].text()

    def mismatch_text(self, name: str, which: int = 0) -> str:
        """A mismatch row's text: this query's (which 0) or the set's (1)."""
        return self.mismatch_values[name][which].text()

    def show_group(self, group: Optional[QueryGroup], reference: Optional[ReferenceInfo] = None,
                   set_mismatch: Optional[dict] = None) -> None:
        """Show a group's statistics; reference: the session's reference policy, None when it has none;
        set_mismatch: the mismatch numbers over the whole set (Session.set_mismatch). The reference rows show only
        when the group has their numbers."""
        self._group = group
        stats = dict(group.stats) if group is not None and group.stats is not None else {}
        n = len(group.rollouts) if group is not None else None
        self.title.setText(f"{n} rollouts " if group is not None else "")
        has_reward = "mean_reward" in stats
        for name, _ in ROWS:
            self.value_labels[name].setText(format_stat(name, stats.get(name), n))
            reward_row = name in ("mean_reward", "reward_std")
            for w in (self.labels[name], self.value_labels[name]):
                w.setEnabled(has_reward or not reward_row)
        has_reference = "same_top_share" in stats
        has_kl = reference is None or reference.has_kl
        for name, _ in REFERENCE_ROWS:
            value = stats.get(name)
            unknown = not has_kl and name in ("mean_kl", "kl_p99")
            self.value_labels[name].setText(UNAVAILABLE if unknown else format_stat(name, value, n))
            for w in (self.labels[name], self.value_labels[name]):
                w.setVisible(has_reference)
        query_mismatch, all_mismatch = mismatch_of(stats), mismatch_of(set_mismatch)
        for name, (mine, every) in self.mismatch_values.items():
            mine.setText(format_mismatch(name, query_mismatch, has_kl))
            every.setText(format_mismatch(name, all_mismatch, has_kl))
        has_mismatch = bool(query_mismatch or all_mismatch)
        self.tabs.setTabEnabled(1, has_mismatch)
        self.tabs.setTabToolTip(1, MISMATCH_TIP if has_mismatch else "The gap between the sampler and a reference "
                                "policy: choose a reference and evaluate the rollouts under it")
        if not has_mismatch:
            self.tabs.setCurrentIndex(0)
        if reference is None or group is None:
            self.reference.setText("")
        elif has_reference:
            self.reference.setText(f"Against the reference π_ref: {reference.description}" + (
                "" if has_kl else " (the policy is on a server, which sends no full rows: the exact KL is "
                                  "unavailable)"))
        else:
            self.reference.setText(f"Reference π_ref: {reference.description}; this query's rollouts are not "
                                   "evaluated under it yet.")
        self.reference.setVisible(bool(self.reference.text()))
        if group is None:
            self.note.setText("Statistics of the selected query's rollouts appear here.")
        elif group.stats is None:
            self.note.setText("Computed when this query's rollouts have finished.")
        else:
            failed = sum(1 for r in group.rollouts if r.reward_error)
            outside = sum(1 for r in group.rollouts if not in_baseline(r))
            notes = []
            if failed:
                notes.append(f"{failed} of {n} rewards failed (hover a pane's header for why).")
            elif not has_reward:
                notes.append("No rewards: pick a reward in the side panel.")
            if outside and has_reward:
                notes.append(f"Reward mean/std and advantages over the {n - outside} i.i.d. rollouts; {outside} "
                             "branched or cancelled kept out (their rewards are shown, without an advantage).")
            self.note.setText(" ".join(notes))
        self.note.setVisible(bool(self.note.text()))
        self.updateGeometry()  # the numbers' widths changed: the window asks minimumSizeHint again
