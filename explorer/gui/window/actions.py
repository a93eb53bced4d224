"""Menus, actions and keyboard shortcuts of the main window."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QMessageBox, QTextBrowser, QVBoxLayout

from explorer.gui.panes.panes import reference_shading_tip

if TYPE_CHECKING:
    from explorer.gui.window.main_window import MainWindow

SHORTCUTS = (
    ("Ctrl+Enter", "Run: sample k rollouts for every query"),
    ("Esc", "Stop the run after the current decode step (what was generated is kept)"),
    ("Ctrl+O", "Open a rollout set (.json), read-only"),
    ("Ctrl+S", "Export the rollout set (JSON, schema v1)"),
    ("Ctrl+Shift+O", "Open a model (.gguf)"),
    ("Ctrl+R", "New seed"),
    ("Ctrl+1 / Ctrl+2 / Ctrl+3", "Shade tokens by probability / by entropy / by log-ratio to the reference policy"),
    ("Ctrl+T", "Tree focus: hide every panel so that the token tree takes the window; again to bring them back"),
    ("Alt+0 … Alt+5", "Show or hide a panel: queries and settings, rollout panes, rollout table, scoring, "
                      "statistics, per-position plot (View > Panels; drag a panel's title to move it, tab it or "
                      "float it; View > Reset layout puts them back)"),
    ("Ctrl+Q", "Quit"),
    ("Drop a file", ".gguf loads a model, .json opens a rollout set"),
)
MOUSE = (
    ("Hover a token (pane, scores)", "its probability pi(token | prefix), logprob, rank, entropy and the top-N "
                                     "alternatives the model weighed; with a reference policy also pi_ref, the "
                                     "ratio pi/pi_ref, the KL there and pi_ref's own top-N"),
    ("Click a token in a pane", "selects its box in the tree"),
    ("Right-click a token in a pane", "Branch here (keep the text through it), Resample from here, or Force one of "
                                      "the alternatives in its tooltip"),
    ("Tree: boxes", "x is the token position; each box is a token, its height its share of the query's rollouts "
                    "(heights: sampled) or of the policy's mass (heights: model pi). Rollouts that share a prefix "
                    "share its boxes; a fork's label names the tokens that part there, their pi and counts"),
    ("Tree: ghosts", "with model heights, hatched boxes are top-N tokens no rollout took; the dotted gap is the mass "
                     "outside them (Alternatives shows or hides both)"),
    ("Hover a tree box", "token, pi, the sampled share against the model's, count, entropy, cumulative log pi of the "
                         "prefix and the prefix text"),
    ("Click a tree box", "selects the rollouts through it: the table shows only their rows, the panes show them; "
                         "click empty space to clear"),
    ("Right-click or double-click a box", "Branch here: k new rollouts continuing from that prefix; on a ghost, "
                                          "forcing its token"),
    ("Wheel / Ctrl+wheel / drag on the tree", "zoom along the tokens / along the shares / pan (Fit shows it all)"),
    ("Rollout table", "one row per distinct response; click a header to sort; select rows to show them as panes"),
    ("Wheel over the side panel", "scrolls it; a spin box or list changes only once clicked (focused)"),
)


def _action(window, text: str, slot, shortcut=None, tip: str = "") -> QAction:
    action = QAction(text, window)
    if shortcut is not None:
        if isinstance(shortcut, (list, tuple)):
            action.setShortcuts([QKeySequence(s) for s in shortcut])
        else:
            action.setShortcut(QKeySequence(shortcut))
    if tip:
        action.setStatusTip(tip)
    action.triggered.connect(slot)
    return action


SHADING_ACTIONS = (("shade_prob", "Shade by &probability", "Ctrl+1", "prob"),
                   ("shade_entropy", "Shade by &entropy", "Ctrl+2", "entropy"),
                   ("shade_log_ratio", "Shade by &log-ratio to the reference", "Ctrl+3", "log_ratio"))


class MenuActions(dict):
    """The window's actions by name."""

    def show_shading(self, mode: str) -> None:
        """Check the shading entry of the mode the views show."""
        self[next(key for key, _, _, m in SHADING_ACTIONS if m == mode)].setChecked(True)

    def follow_options(self, options) -> None:
        """The shading entries show the views' shading, whoever changes it."""
        options.changed.connect(lambda name: name == "shading" and self.show_shading(options.shading))
        self.show_shading(options.shading)

    def show_reference(self, description) -> None:
        """The session's reference policy (its description), or None: the log-ratio entry says what it shades
        against, or why it shades nothing. It stays enabled without a reference: a user may pick it before a run
        whose reference is still to evaluate the rollouts, and the legend says why nothing is shaded meanwhile."""
        tip = reference_shading_tip(description)
        self["shade_log_ratio"].setToolTip(tip)
        self["shade_log_ratio"].setStatusTip(tip)


def build_menus(window: "MainWindow") -> MenuActions:
    bar = window.menuBar()
    file_menu = bar.addMenu("&File")
    a = MenuActions()

    a["open_model"] = _action(window, "Open &model…", window.controls.open_model_dialog, "Ctrl+Shift+O",
                              "Load a .gguf model")
    a["open_set"] = _action(window, "&Open rollout set…", window.files.open_rollout_set_dialog, QKeySequence.StandardKey.Open,
                            "Show a saved rollout set read-only, without loading a model")
    a["export"] = _action(window, "&Export rollout set…", window.files.export_dialog, QKeySequence.StandardKey.Save,
                          "Save the rollouts as JSON (schema v1)")
    a["export_jsonl"] = _action(window, "Export &JSONL…", window.files.export_jsonl_dialog, None,
                                "One rollout per line, for RL tooling")
    a["quit"] = _action(window, "&Quit", window.close, QKeySequence.StandardKey.Quit)
    file_menu.addAction(a["open_model"])
    file_menu.addAction(a["open_set"])
    file_menu.addMenu(window.files.recent_menu)  # FileActions fills it
    file_menu.addSeparator()
    file_menu.addAction(a["export"])
    file_menu.addAction(a["export_jsonl"])
    file_menu.addSeparator()
    file_menu.addAction(a["quit"])

    run_menu = bar.addMenu("&Run")
    a["run"] = _action(window, "&Run", window.run, ["Ctrl+Return", "Ctrl+Enter"], "Sample k rollouts per query")
    a["stop"] = _action(window, "&Stop", window.stop, "Esc", "Stop after the current decode step")
    a["new_seed"] = _action(window, "New &seed", window.controls.new_seed, "Ctrl+R")
    for key in ("run", "stop", "new_seed"):
        run_menu.addAction(a[key])

    view_menu = bar.addMenu("&View")
    view_menu.setToolTipsVisible(True)
    shading = QActionGroup(window)
    for key, text, shortcut, mode in SHADING_ACTIONS:
        action = _action(window, text, lambda _=False, m=mode: window.views.options.set_shading(m), shortcut)
        action.setCheckable(True)
        shading.addAction(action)
        view_menu.addAction(action)
        a[key] = action
    a.follow_options(window.views.options)
    a.show_reference(None)
    window.views.reference_changed.connect(a.show_reference)
    a["compact"] = _action(window, "&Compact panes", window.views.set_compact)
    a["compact"].setCheckable(True)
    a["compact"].setToolTip("Narrow panes (automatic for k > 8)")
    view_menu.addAction(a["compact"])
    view_menu.addSeparator()
    panels_menu = view_menu.addMenu("&Panels")
    for dock in window.panels.docks.values():
        panels_menu.addAction(dock.toggleViewAction())
    a["tree_focus"] = _action(window, "&Tree focus", window.panels.toggle_tree_focus, "Ctrl+T",
                              "Hide every panel so that the tree takes the window; again to bring them back")
    a["reset_layout"] = _action(window, "&Reset layout", window.panels.reset, None,
                                "Put every panel back where it starts, at its first size")
    view_menu.addAction(a["tree_focus"])
    view_menu.addAction(a["reset_layout"])

    help_menu = bar.addMenu("&Help")
    a["shortcuts"] = _action(window, "&Keys and mouse", lambda: show_shortcuts(window), "F1")
    a["about"] = _action(window, "&About Rollout Explorer", lambda: show_about(window))
    help_menu.addAction(a["shortcuts"])
    help_menu.addAction(a["about"])
    return a


def _rows(pairs) -> str:
    return "".join(f"<tr><td><b>{keys}</b>&nbsp;&nbsp;</td><td>{what}</td></tr>" for keys, what in pairs)


def shortcuts_html() -> str:
    """The Help: every key, then every mouse action."""
    return (f"<h3>Keys</h3><table>{_rows(SHORTCUTS)}</table>"
            f"<h3>Mouse</h3><table>{_rows(MOUSE)}</table>")


def shortcuts_dialog(window) -> QDialog:
    """The Help: a text that scrolls, in a dialog that fits the screen the window is on (the list is taller than a
    laptop's screen)."""
    dialog = QDialog(window)
    dialog.setWindowTitle("Keys and mouse")
    text = QTextBrowser()
    text.setOpenLinks(False)
    text.setHtml(shortcuts_html())
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dialog.reject)
    layout = QVBoxLayout(dialog)
    layout.addWidget(text, 1)
    layout.addWidget(buttons)
    screen = (window.screen() if window is not None else None) or QGuiApplication.primaryScreen()
    room = screen.availableGeometry()
    dialog.resize(min(760, int(room.width() * 0.9)), min(820, int(room.height() * 0.85)))
    return dialog


def show_shortcuts(window) -> None:
    dialog = shortcuts_dialog(window)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.show()


def show_about(window) -> None:
    QMessageBox.about(
        window, "About Rollout Explorer",
        "<b>Rollout Explorer</b><br>A language model is a policy pi(y|x). Sample k rollouts per query, compare them "
        "side by side with each token's probability, see where they branch, score any response you type, and "
        "export everything as JSON.")
