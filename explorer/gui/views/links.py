"""Selection linking between the token tree, the rollout table, the panes and the side plot of the shown group.

- A box clicked in the tree filters the table to the rollouts through it and selects them (clearing the box clears
  both); the panes show them.
- Rows selected in the table show those rollouts as panes, and the side plot the first of them; with no row
  selected the panes show the group's first DEFAULT_PANES rollouts (all of them for a small k), so a large k never
  means a wall of panes.
- Another group shown starts with nothing selected: a box of one query's tree never filters another's table.
"""

from __future__ import annotations

from typing import Optional, Sequence

from explorer.core.types import Rollout
from explorer.gui.panes.panes import RolloutPanes
from explorer.gui.views.rollout_table import RolloutTable
from explorer.gui.views.side_plot import SidePlot
from explorer.gui.tree.tree_view import TokenTreeView

DEFAULT_PANES = 8


class ViewLinks:
    def __init__(self, tree_view: TokenTreeView, table: RolloutTable, panes: RolloutPanes, side_plot: SidePlot):
        self.tree_view, self.table, self.panes, self.side_plot = tree_view, table, panes, side_plot
        self._group_id: Optional[str] = None
        self._ids: list[str] = []  # the shown group's rollouts, in group order
        tree_view.node_selected.connect(self._on_box)
        table.rollouts_selected.connect(self._on_rows)

    def show_rollouts(self, group_id: str, rollouts: Sequence[Rollout]) -> None:
        """The shown group's rollouts changed (streamed, finished, branched) or another group is shown: refresh the
        table; another group's table starts unfiltered."""
        if group_id != self._group_id:
            self._group_id = group_id
            self.table.set_filter(None)
        ids = [r.id for r in rollouts]
        grew = ids != self._ids
        self._ids = ids
        self.table.set_rollouts(rollouts)
        if grew and not self.table.selected_rollouts():
            self._on_rows([])

    def clear(self) -> None:
        self._group_id = None
        self._ids = []
        self.table.set_filter(None)
        self.table.set_rollouts(())

    def _default_panes(self) -> Optional[list[str]]:
        return None if len(self._ids) <= DEFAULT_PANES else self._ids[:DEFAULT_PANES]

    def _on_rows(self, ids: list) -> None:
        self.panes.show_only(list(ids) if ids else self._default_panes())
        if ids:
            self.side_plot.set_rollout(ids[0])

    def _on_box(self, group_id: str, ids: list) -> None:
        if group_id != self._group_id:
            return  # a tree still showing the group before (its switch waits for its turn while a run streams)
        if ids:
            self.table.set_filter(ids)
            self.table.select_rollouts(ids)
        else:
            self.table.set_filter(None)
            self.table.select_rollouts([])
        self.panes.highlight_rollouts(list(ids))
