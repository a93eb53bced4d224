"""Palette-aware colour helpers: the window follows the system light/dark palette, so colours are derived from it."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPalette, QPen
from PySide6.QtWidgets import QApplication, QWidget


def is_dark(palette: QPalette | None = None) -> bool:
    """True when the palette's base (text background) is dark."""
    if palette is None:
        palette = QApplication.palette()
    return palette.color(QPalette.ColorRole.Base).lightnessF() < 0.5


def widget_is_dark(widget: QWidget) -> bool:
    return is_dark(widget.palette())


def blend(under: QColor, over: QColor, amount: float) -> QColor:
    """`over` laid on `under` with opacity `amount` (0..1), as an opaque colour."""
    a = min(max(amount, 0.0), 1.0)
    return QColor.fromRgbF(
        under.redF() + (over.redF() - under.redF()) * a,
        under.greenF() + (over.greenF() - under.greenF()) * a,
        under.blueF() + (over.blueF() - under.blueF()) * a,
    )


def muted_text(palette: QPalette) -> QColor:
    """A secondary text colour: readable, quieter than the main text."""
    return blend(palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.Text), 0.62)


def accent(palette: QPalette) -> QColor:
    return palette.color(QPalette.ColorRole.Highlight)


# Finish reasons, coloured in hues that keep enough contrast on both palettes (chosen mid-lightness).
_FINISH_COLOURS = {
    "stop": "#3a9d5d",
    "stop_string": "#3a9d5d",
    "length": "#c98a1b",
    "cancelled": "#c0504d",
}


def finish_colour(reason: str | None) -> QColor:
    return QColor(_FINISH_COLOURS.get(reason or "", "#6f86c9"))


# ---------------------------------------------------------------------------------------------------------------
# Token shading. A token's "strength" is 0 (nothing to see: a sure token, or a peaked distribution) .. 1 (a token the
# model found unlikely, or a flat distribution). Strength picks a hue along a ramp and an opacity over the palette's
# base colour, so the same ramp reads on light and dark palettes and the text colour never has to change.

SHADING_MODES = ("prob", "entropy")
ENTROPY_FULL_SCALE = 4.0  # nats; an entropy this high (about 55 equally likely tokens) gets the strongest shade
SHADE_LEVELS = 32  # colours are quantised so formats can be cached and equal neighbours merged into one run

# (strength, colour) stops; warm for improbable tokens, cool for uncertain distributions.
_RAMPS = {
    "prob": ((0.0, "#f5cf4b"), (0.35, "#f49a32"), (0.7, "#e8484a"), (1.0, "#c8308a")),
    "entropy": ((0.0, "#5cc8e0"), (0.45, "#3e86e6"), (1.0, "#8451e0")),
}
_MAX_OPACITY = {False: 0.56, True: 0.66}  # keyed by is_dark


def shade_strength(mode: str, prob: float, entropy: float) -> float:
    if mode == "entropy":
        if entropy is None or entropy != entropy:  # None or NaN: nothing known, no shade
            return 0.0
        return min(max(entropy, 0.0) / ENTROPY_FULL_SCALE, 1.0)
    return min(max(1.0 - prob, 0.0), 1.0)


def shade_level(mode: str, prob: float, entropy: float) -> int:
    """0 (no shade) .. SHADE_LEVELS."""
    return int(round(shade_strength(mode, prob, entropy) * SHADE_LEVELS))


def _ramp_colour(mode: str, strength: float) -> QColor:
    stops = _RAMPS[mode]
    for (s0, c0), (s1, c1) in zip(stops, stops[1:]):
        if strength <= s1:
            return blend(QColor(c0), QColor(c1), (strength - s0) / (s1 - s0))
    return QColor(stops[-1][1])


def shade_colour(mode: str, level: int, palette: QPalette | None = None) -> QColor | None:
    """The background for a shade level over the palette's base colour; None for level 0 (leave the base alone)."""
    if mode not in _RAMPS:
        raise ValueError(f"unknown shading mode {mode!r}; expected one of {', '.join(SHADING_MODES)}")
    if level <= 0:
        return None
    if palette is None:
        palette = QApplication.palette()
    strength = min(level, SHADE_LEVELS) / SHADE_LEVELS
    # a floor on the opacity keeps the faintest shades visible; a square root lifts the low end of the scale
    opacity = _MAX_OPACITY[is_dark(palette)] * (0.12 + 0.88 * strength ** 0.8)
    return blend(palette.color(QPalette.ColorRole.Base), _ramp_colour(mode, strength), opacity)


class ShadingLegend(QWidget):
    """A small colour bar saying what the shading means: '<label>  low [gradient] high'."""

    def __init__(self, parent: QWidget | None = None, mode: str = "prob"):
        super().__init__(parent)
        self._mode = mode
        self.setToolTip(self._explanation())

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        if mode not in SHADING_MODES:
            raise ValueError(f"unknown shading mode {mode!r}; expected one of {', '.join(SHADING_MODES)}")
        self._mode = mode
        self.setToolTip(self._explanation())
        self.update()

    def _texts(self) -> tuple[str, str, str]:
        if self._mode == "entropy":
            return "entropy", "0", f"≥{ENTROPY_FULL_SCALE:g} nats"
        return "token p", "1", "0"

    def _explanation(self) -> str:
        if self._mode == "entropy":
            return ("Each token is shaded by the entropy of the distribution it was drawn from: "
                    "the stronger the colour, the less sure the model was about what comes next.")
        return ("Each token is shaded by its raw probability pi(token | context) at temperature 1: "
                "the stronger the colour, the less likely the model found that token.")

    def _bar_width(self) -> int:
        return 120

    def sizeHint(self):  # noqa: N802 (Qt override)
        fm = self.fontMetrics()
        label, low, high = self._texts()
        width = sum(fm.horizontalAdvance(t) for t in (label, low, high)) + self._bar_width() + 30
        return QSize(width, fm.height() + 6)

    def minimumSizeHint(self):  # noqa: N802 (Qt override)
        return self.sizeHint()

    def paintEvent(self, event):  # noqa: N802 (Qt override)
        painter = QPainter(self)
        pal = self.palette()
        fm = self.fontMetrics()
        label, low, high = self._texts()
        h = self.height()
        x = 0.0
        painter.setPen(muted_text(pal))
        painter.drawText(QRectF(x, 0, fm.horizontalAdvance(label) + 2, h), Qt.AlignmentFlag.AlignVCenter, label)
        x += fm.horizontalAdvance(label) + 10
        painter.setPen(pal.color(QPalette.ColorRole.Text))
        painter.drawText(QRectF(x, 0, fm.horizontalAdvance(low) + 2, h), Qt.AlignmentFlag.AlignVCenter, low)
        x += fm.horizontalAdvance(low) + 5
        bar_h = max(8.0, fm.height() - 4.0)
        top = (h - bar_h) / 2
        step = self._bar_width() / (SHADE_LEVELS + 1)
        base = pal.color(QPalette.ColorRole.Base)
        for level in range(SHADE_LEVELS + 1):
            painter.fillRect(QRectF(x + level * step, top, step + 0.5, bar_h), shade_colour(self._mode, level, pal) or base)
        painter.setPen(QPen(muted_text(pal), 1))
        painter.drawRect(QRectF(x, top, self._bar_width(), bar_h))
        x += self._bar_width() + 5
        painter.setPen(pal.color(QPalette.ColorRole.Text))
        painter.drawText(QRectF(x, 0, fm.horizontalAdvance(high) + 2, h), Qt.AlignmentFlag.AlignVCenter, high)
        painter.end()
