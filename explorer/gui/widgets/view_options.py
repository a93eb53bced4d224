"""How the views show a session, kept once: the token shading and beta of the implicit reward.

Every view that shades tokens (panes, their legend, the scoring table) or shows implicit rewards (pane headers, the
rollout table) reads these values when it draws and redraws on `changed`; none keeps a copy. The window saves them
in its settings; the menus, the panes' shading box and the beta box are editors of them.
"""

from __future__ import annotations

import math
from typing import Optional

from PySide6.QtCore import QObject, Signal

from explorer.gui.widgets.style import SHADING_MODES

DEFAULT_BETA = 0.1  # DPO's common beta
BETA_RANGE = (0.001, 100.0)


class ViewOptions(QObject):
    changed = Signal(str)  # the option that changed: "shading" or "beta"

    def __init__(self, parent: Optional[QObject] = None):
        super().__init__(parent)
        self._shading = "prob"
        self._beta = DEFAULT_BETA

    @property
    def shading(self) -> str:
        """What a token's colour shows: "prob" (pi(token | prefix)), "entropy" or "log_ratio" (log pi - log pi_ref)."""
        return self._shading

    def set_shading(self, mode: str) -> None:
        if mode not in SHADING_MODES:
            raise ValueError(f"unknown shading mode {mode!r}; expected one of {', '.join(SHADING_MODES)}")
        if mode != self._shading:
            self._shading = mode
            self.changed.emit("shading")

    @property
    def beta(self) -> float:
        """beta of DPO's implicit reward beta * log(pi(y|x) / pi_ref(y|x))."""
        return self._beta

    def set_beta(self, beta: float) -> None:
        beta = float(beta)
        low, high = BETA_RANGE
        if not math.isfinite(beta) or not low <= beta <= high:
            raise ValueError(f"beta must be between {low:g} and {high:g}, not {beta!r}")
        if beta != self._beta:
            self._beta = beta
            self.changed.emit("beta")
