"""Where the window's parts sit: the token tree in the middle, every other part a dock panel around it.

Two arrangements, picked by how many rollouts a query has. Up to PANES_LEAD_K the panes lead: they sit above the
tree, as wide as the window, as they always did. Above it the tree leads: it takes most of the window, and the panes
are a tab beside the rollout table under it (with more rollouts than fit side by side, the tree and the table are
what tell them apart). A user may show, hide, move, float, tabify and resize every panel (View > Panels, Alt+0..5);
what they make of each arrangement is kept in the settings (QMainWindow.saveState), and View > Reset layout goes back
to the defaults. Tree focus (Ctrl+T) hides every panel and brings them back.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QByteArray, QEvent, QObject, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QDockWidget, QMainWindow, QTabBar, QToolBar, QWidget

PANES_LEAD_K = 8  # rollouts per query up to which the panes lead; above it the tree does
ARRANGEMENTS = ("panes", "tree")
PANELS = (  # name, title, key to show or hide it
    ("controls", "Queries and settings", "Alt+0"),
    ("panes", "Rollout panes", "Alt+1"),
    ("table", "Rollout table", "Alt+2"),
    ("scoring", "Scoring", "Alt+3"),
    ("stats", "Statistics", "Alt+4"),
    ("side_plot", "Per-position plot", "Alt+5"),
)
SETTINGS_KEY = "layout/{}"  # one saved state per arrangement
STATE_VERSION = 1  # of the saved states: another number (a layout of another release) is not restored
# default proportions of the window
PANES_HEIGHT = 0.34  # the panes above the tree, when they lead
BOTTOM_HEIGHT = {"panes": 0.26, "tree": 0.28}  # the table and its neighbours under the tree
TABLE_WIDTH = 0.66  # of the width under the tree: the table; the rest: scoring and statistics
CONTROLS_WIDTH = 300
WIDE = 1280  # px: a narrower window keeps scoring and statistics as tabs beside the table, not a column of their own


def arrangement_for(k: int) -> str:
    return "panes" if k <= PANES_LEAD_K else "tree"


class PanelLayout(QObject):
    """Owns the dock panels of a QMainWindow, the arrangement shown, and what the user made of each arrangement."""

    changed = Signal()  # a panel moved, was shown or hidden or resized, or the arrangement switched: save soon

    def __init__(self, window: QMainWindow, parts: dict[str, QWidget], tabs: QTabBar):
        """parts: the window's parts by name: "tree" (the middle) and one per panel of PANELS; tabs: the query tabs,
        above everything."""
        super().__init__(window)
        self._window = window
        window.setCentralWidget(parts["tree"])
        window.setDockNestingEnabled(True)
        # no AnimatedDocks: its animations ran (and were deleted) on the window's thread in the middle of runs
        window.setDockOptions(QMainWindow.DockOption.AllowNestedDocks | QMainWindow.DockOption.AllowTabbedDocks)
        # the side panel runs the full height on the left; the panes, when above the tree, reach the right edge
        window.setCorner(Qt.Corner.TopLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        window.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        window.setCorner(Qt.Corner.TopRightCorner, Qt.DockWidgetArea.TopDockWidgetArea)
        window.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabs_bar = QToolBar("Queries", window)
        self.tabs_bar.setObjectName("query_tabs")
        self.tabs_bar.setMovable(False)
        self.tabs_bar.setFloatable(False)
        self.tabs_bar.toggleViewAction().setVisible(False)  # the query tabs are not a panel to hide
        self.tabs_bar.addWidget(tabs)
        window.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.tabs_bar)
        self.docks: dict[str, QDockWidget] = {}
        for name, title, key in PANELS:
            dock = QDockWidget(title, window)
            dock.setObjectName(f"panel_{name}")
            dock.setWidget(parts[name])
            action = dock.toggleViewAction()
            action.setShortcut(QKeySequence(key))
            action.setStatusTip(f"Show or hide the {title.lower()} ({key})")
            dock.dockLocationChanged.connect(self._on_user_change)
            dock.topLevelChanged.connect(self._on_user_change)
            dock.visibilityChanged.connect(self._on_user_change)
            dock.installEventFilter(self)  # a resize by the user's drag has no signal of its own
            self.docks[name] = dock
        self.arrangement: Optional[str] = None
        self._saved: dict[str, Optional[QByteArray]] = {name: None for name in ARRANGEMENTS}
        self._before_focus: Optional[QByteArray] = None  # the state tree focus hid, while it is on
        self._sizes_pending = False  # default sizes to give once the window has its real size
        self._quiet = 0

    # -- the arrangement -------------------------------------------------------------------------------------------
    def show_for(self, k: int) -> None:
        """Show the arrangement for queries of k rollouts (kept as the user left it, if they changed it)."""
        arrangement = arrangement_for(k)
        if arrangement == self.arrangement:
            return
        if self.arrangement is not None:
            self._saved[self.arrangement] = self.state()
        self._before_focus = None
        self.arrangement = arrangement
        saved = self._saved[arrangement]
        self._quiet += 1
        try:
            if saved is None or not self._window.restoreState(saved, STATE_VERSION):
                self._arrange(arrangement)
        finally:
            self._quiet -= 1
        self.changed.emit()

    def reset(self) -> None:
        """Back to the default arrangements (both of them), sized for the window as it is."""
        self._saved = {name: None for name in ARRANGEMENTS}
        self._before_focus = None
        self._quiet += 1
        try:
            self._arrange(self.arrangement or "panes")
        finally:
            self._quiet -= 1
        self.changed.emit()

    def _arrange(self, arrangement: str) -> None:
        w, d = self._window, self.docks
        for dock in d.values():
            w.removeDockWidget(dock)
        bottom = Qt.DockWidgetArea.BottomDockWidgetArea
        w.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, d["controls"])
        if arrangement == "panes":
            w.addDockWidget(Qt.DockWidgetArea.TopDockWidgetArea, d["panes"])
        w.addDockWidget(bottom, d["table"])
        if arrangement == "tree":
            w.tabifyDockWidget(d["table"], d["panes"])
        # tabs beside the table until the window's width is known (a column of their own widens a narrow window)
        for name in ("side_plot", "scoring", "stats"):
            w.tabifyDockWidget(d["table"], d[name])
        for dock in d.values():
            dock.setFloating(False)
            dock.show()
        d["table"].raise_()
        self._sizes_pending = True
        if w.isVisible():
            self._give_default_sizes()

    def window_shown(self) -> None:
        """The window is on screen with its real size: default sizes asked for before are given now (sizes given to
        a window not shown yet are not kept)."""
        if self._sizes_pending:
            QTimer.singleShot(0, self._give_default_sizes)

    def _give_default_sizes(self) -> None:
        self._sizes_pending = False
        w, d = self._window, self.docks
        bars = w.menuBar().height() + w.statusBar().height() + self.tabs_bar.height()
        height = max(w.height() - bars, 300)  # what the panels and the tree share
        wide = w.width() >= WIDE
        arrangement = self.arrangement or "panes"
        self._quiet += 1
        try:
            if wide:  # room for scoring and statistics beside the table, in a column of their own
                for name in ("scoring", "stats"):
                    w.removeDockWidget(d[name])
                w.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, d["scoring"], Qt.Orientation.Horizontal)
                w.tabifyDockWidget(d["scoring"], d["stats"])
                for name in ("scoring", "stats"):
                    d[name].show()
                d["scoring"].raise_()
            w.resizeDocks([d["controls"]], [CONTROLS_WIDTH], Qt.Orientation.Horizontal)
            if arrangement == "panes":
                w.resizeDocks([d["panes"], d["table"]],
                              [int(height * PANES_HEIGHT), int(height * BOTTOM_HEIGHT["panes"])],
                              Qt.Orientation.Vertical)
            else:
                w.resizeDocks([d["table"]], [int(height * BOTTOM_HEIGHT["tree"])], Qt.Orientation.Vertical)
            if wide:
                width = max(w.width() - CONTROLS_WIDTH, 400)
                w.resizeDocks([d["table"], d["scoring"]], [int(width * TABLE_WIDTH), width - int(width * TABLE_WIDTH)],
                              Qt.Orientation.Horizontal)
        finally:
            self._quiet -= 1

    # -- tree focus ------------------------------------------------------------------------------------------------
    @property
    def tree_focused(self) -> bool:
        return self._before_focus is not None

    def toggle_tree_focus(self) -> None:
        """Hide every panel (the tree takes the window), or bring back what tree focus hid."""
        self._quiet += 1
        try:
            if self._before_focus is not None:
                state, self._before_focus = self._before_focus, None
                self._window.restoreState(state, STATE_VERSION)
            else:
                self._before_focus = self._window.saveState(STATE_VERSION)
                for dock in self.docks.values():
                    dock.hide()
        finally:
            self._quiet -= 1

    # -- settings --------------------------------------------------------------------------------------------------
    def state(self) -> QByteArray:
        """The arrangement shown as the user left it (what tree focus hid included)."""
        return self._before_focus if self._before_focus is not None else self._window.saveState(STATE_VERSION)

    def save(self, settings: QSettings) -> None:
        if self.arrangement is not None:
            self._saved[self.arrangement] = self.state()
        for name in ARRANGEMENTS:
            if self._saved[name] is not None:
                settings.setValue(SETTINGS_KEY.format(name), self._saved[name])
            else:
                settings.remove(SETTINGS_KEY.format(name))

    def restore(self, settings: QSettings) -> None:
        """What the user made of each arrangement last time (shown by the next show_for)."""
        for name in ARRANGEMENTS:
            state = settings.value(SETTINGS_KEY.format(name))
            self._saved[name] = state if isinstance(state, QByteArray) and not state.isEmpty() else None
        if self.arrangement is not None:  # shown already: show it as saved
            arrangement, self.arrangement = self.arrangement, None
            self.show_for(PANES_LEAD_K if arrangement == "panes" else PANES_LEAD_K + 1)

    # -- the user's changes ----------------------------------------------------------------------------------------
    def _on_user_change(self, *_args) -> None:
        if not self._quiet and self.arrangement is not None:
            self.changed.emit()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt override)
        if event.type() == QEvent.Type.Resize and obj.isVisible():
            self._on_user_change()
        return False
