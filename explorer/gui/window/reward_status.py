"""The status bar's reward note: which reward scores the rollouts and how many of its calls failed (listed in the
tooltip). The rewards themselves are the Session's; this only shows them."""

from __future__ import annotations

from typing import Optional

from PySide6.QtWidgets import QLabel

from explorer.core.session import Session
from explorer.gui.widgets.style import finish_colour

MAX_LISTED = 8  # reward errors listed in the tooltip


class RewardStatus(QLabel):
    def update_for(self, reward_name: str, session: Optional[Session]) -> list[tuple[str, str]]:
        """Show the reward chosen and the session's failures; returns the failures."""
        errors = session.reward_errors() if session is not None else []
        if not reward_name and not errors:
            self.setText("")
            self.setToolTip("")
            self.setVisible(False)
            return errors
        text = f"Reward: {reward_name}" if reward_name else "Reward: from the file"
        if errors:
            red = finish_colour("cancelled").name()
            text += f' · <span style="color:{red};font-weight:bold">{len(errors)} failed</span>'
            listed = [f"{rid}: {why}" for rid, why in errors[:MAX_LISTED]]
            if len(errors) > MAX_LISTED:
                listed.append(f"… and {len(errors) - MAX_LISTED} more")
            self.setToolTip("Rewards that failed (null reward):\n" + "\n".join(listed))
        else:
            self.setToolTip("Rewards and advantages are in the pane headers and the exports")
        self.setText(text)
        self.setVisible(True)
        return errors
