"""Selection linking between the token tree, the rollout table and the panes of the shown group.

- A box clicked in the tree filters the table to the rollouts through it and selects them (clearing the box clears
  both); the panes show them.
- Rows selected in the table show those rollouts as panes; with no row selected the panes show the group's first
  DEFAULT_PANES rollouts (all of them for a small k), so a large k never means a wall of panes.
"""

from __future__ import annotations

from typing import Optional, Sequence

from explorer.core.types import Rollout
from explorer.gui.panes.panes import RolloutPanes
from explorer.gui.views.rollout_table import RolloutTable
from explorer.gui.tree.tree_view import TokenTreeView

DEFAULT_PANES = 8


class ViewLinks:
    def __init__(self, tree_view: TokenTreeView, table: RolloutTable, panes: RolloutPanes):
        self.tree_view, self.table, self.panes = tree_view, table, panes
        self._ids: list[str] = []  # the shown group's rollouts, in group order
        tree_view.node_selected.connect(self._on_box)
        table.rollouts_selected.connect(self._on_rows)

    def show_rollouts(self, rollouts: Sequence[Rollout]) -> None:
        """The shown group's rollouts changed (streamed, finished, branched, another group): refresh the table."""
        ids = [r.id for r in rollouts]
        grew = ids != self._ids
        self._ids = ids
        self.table.set_rollouts(rollouts)
        if grew and not self.table.selected_rollouts():
            self._on_rows([])

    def clear(self) -> None:
        self._ids = []
        self.table.set_filter(None)
        self.table.set_rollouts(())

    def _default_panes(self) -> Optional[list[str]]:
        return None if len(self._ids) <= DEFAULT_PANES else self._ids[:DEFAULT_PANES]

    def _on_rows(self, ids: list) -> None:
        self.panes.show_only(list(ids) if ids else self._default_panes())

    def _on_box(self, _group_id: str, ids: list) -> None:
        if ids:
            self.table.set_filter(ids)
            self.table.select_rollouts(ids)
        else:
            self.table.set_filter(None)
            self.table.select_rollouts([])
        self.panes.highlight_rollouts(list(ids))
