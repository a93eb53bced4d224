"""The views made in other modules, each optional: the window still opens (with plain stand-ins for the panes and
the scoring panel, without the tree) while one of them is missing. Only a module's absence is tolerated: an error
inside a present module is raised as usual."""

from __future__ import annotations

try:
    from .panes import RolloutPanes
except ModuleNotFoundError as exc:  # the panes module is a separate piece of work; only its absence is tolerated
    if exc.name != "explorer.gui.panes":
        raise
    from .fallback_views import FallbackPanes as RolloutPanes
try:
    from .scoring import ScoringPanel
except ModuleNotFoundError as exc:
    if exc.name != "explorer.gui.scoring":
        raise
    from .fallback_views import FallbackScoring as ScoringPanel
try:
    from ..core.tree import TokenTree
    from .tree_view import TokenTreeView
except ModuleNotFoundError as exc:
    if exc.name not in ("explorer.gui.tree_view", "explorer.core.tree"):
        raise
    TokenTree = TokenTreeView = None
try:
    from .side_plot import SidePlot
except ModuleNotFoundError as exc:
    if exc.name != "explorer.gui.side_plot":
        raise
    SidePlot = None

