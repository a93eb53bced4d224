"""Palette-aware colour helpers: the window follows the system light/dark palette, so colours are derived from it."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPalette, QPen
from PySide6.QtWidgets import QApplication, QWidget

from explorer.core.numbers import MINUS


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
# Colour scales: one per quantity a token or a box can be coloured by, the same in the panes, the rollout table, the
# token tree and their legends (a value has one colour everywhere). A value's "strength" is 0 (nothing to see: a
# sure token, a peaked distribution, no KL) .. 1 (a token the model found unlikely, a flat distribution); a diverging
# scale's strength is signed (-1 .. 1) around its centre. Strength picks a hue along a ramp and an opacity over the
# palette's base colour, so the same ramp reads on light and dark palettes and the text colour never has to change.

ENTROPY_FULL_SCALE = 4.0  # nats; an entropy this high (about 55 equally likely tokens) gets the strongest shade
# nats; |log pi - log pi_ref| this large (a ratio of e^2, about 7x either way) gets the strongest shade. Quantisation
# noise (a Q4 model against its float weights: median 0.02 nats, worst about 0.5) stays in the faint shades, while a
# token the two policies really disagree on (another system prompt, a base against an instruct model: several nats)
# stands out at full colour; a wider scale would leave the disagreements that matter pale.
LOG_RATIO_FULL_SCALE = 2.0
# KL(pi || pi_ref) is the mean log-ratio under pi, so by default it gets the same full scale: a position whose KL is
# 2 nats differs on average as much as a token at full colour does. The tree's KL scale follows its own KLs
# (TokenTreeView.colour_scale, with_bounds); this is the scale where it has none.
KL_FULL_SCALE = LOG_RATIO_FULL_SCALE
SHADE_LEVELS = 32  # colours are quantised so formats and brushes can be cached and equal neighbours merged
_MAX_OPACITY = {False: 0.56, True: 0.66}  # keyed by is_dark


@dataclass(frozen=True)
class ColourScale:
    """How one quantity is coloured. Its bounds are parameters (with_bounds): a scale fitted to the data, or one
    centred on a group's mean, is the same scale with other bounds."""

    key: str
    label: str  # what the legend calls it
    low: float  # the value at strength 0 (a diverging scale: at strength -1)
    high: float  # the value at strength 1 (low > high: strength grows as the value falls, as for pi)
    stops: tuple  # (strength, colour) ramp over 0..1 (a diverging scale: its side above the centre)
    negative_stops: tuple = ()  # a diverging scale's side below the centre
    centre: Optional[float] = None  # a diverging scale's neutral value (strength 0)

    @property
    def diverging(self) -> bool:
        return self.centre is not None

    @property
    def levels(self) -> range:
        """Every level of the scale, weakest (most negative) first."""
        return range(-SHADE_LEVELS, SHADE_LEVELS + 1) if self.diverging else range(SHADE_LEVELS + 1)

    def with_bounds(self, low: float, high: float, centre: Optional[float] = None) -> "ColourScale":
        return replace(self, low=low, high=high, centre=self.centre if centre is None else centre)

    def strength(self, value: Optional[float]) -> float:
        """0 .. 1 (a diverging scale -1 .. 1); 0 for an unknown value (None or NaN)."""
        if value is None or value != value:
            return 0.0
        if self.centre is not None:
            c = self.centre
            s = (value - c) / (self.high - c) if value >= c else (value - c) / (c - self.low)
            return min(max(s, -1.0), 1.0)
        return min(max((value - self.low) / (self.high - self.low), 0.0), 1.0)

    def strengths(self, values: np.ndarray) -> np.ndarray:
        """strength() of every value at once; NaN where unknown."""
        v = np.asarray(values, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.centre is not None:
                c = self.centre
                s = np.where(v >= c, (v - c) / (self.high - c), (v - c) / (c - self.low))
                return np.clip(s, -1.0, 1.0)
            return np.clip((v - self.low) / (self.high - self.low), 0.0, 1.0)

    def level(self, value: Optional[float]) -> int:
        return int(round(self.strength(value) * SHADE_LEVELS))

    def level_indices(self, values: np.ndarray) -> np.ndarray:
        """Every value's index into colours(): its level from the weakest, the unknown colour (the last) where NaN."""
        s = self.strengths(values)
        unknown = np.isnan(s)
        offset = SHADE_LEVELS if self.diverging else 0
        index = np.rint(np.where(unknown, 0.0, s) * SHADE_LEVELS).astype(np.int64) + offset
        index[unknown] = len(self.levels)
        return index

    def colour(self, level: int, palette: QPalette | None = None) -> QColor | None:
        """The colour of a level over the palette's base colour; None for level 0 (leave the base alone). A diverging
        level is signed: its sign picks the side of the scale."""
        if level == 0 or (level < 0 and not self.diverging):
            return None
        if palette is None:
            palette = QApplication.palette()
        stops = self.negative_stops if level < 0 else self.stops
        strength = min(abs(level), SHADE_LEVELS) / SHADE_LEVELS
        # a floor on the opacity keeps the faintest shades visible; a root lifts the low end of the scale
        opacity = _MAX_OPACITY[is_dark(palette)] * (0.12 + 0.88 * strength ** 0.8)
        return blend(palette.color(QPalette.ColorRole.Base), _ramp_colour(stops, strength), opacity)

    def colours(self, palette: QPalette | None = None) -> list[QColor]:
        """One colour per level (level 0 is the base colour), then the unknown colour: level_indices index it."""
        if palette is None:
            palette = QApplication.palette()
        base = palette.color(QPalette.ColorRole.Base)
        return [self.colour(level, palette) or QColor(base) for level in self.levels] + [unknown_colour(palette)]

    def colour_of(self, value: Optional[float], palette: QPalette | None = None) -> QColor:
        """The colour a value is drawn with (the base colour where it is 0 or unknown)."""
        if palette is None:
            palette = QApplication.palette()
        return self.colour(self.level(value), palette) or QColor(palette.color(QPalette.ColorRole.Base))


def unknown_colour(palette: QPalette) -> QColor:
    """Where a value is unknown (no reference facts, an alternative nobody took): a mid grey, apart from every
    scale's faint end."""
    return blend(palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.Text), 0.4)


def _ramp_colour(stops, strength: float) -> QColor:
    for (s0, c0), (s1, c1) in zip(stops, stops[1:]):
        if strength <= s1:
            return blend(QColor(c0), QColor(c1), (strength - s0) / (s1 - s0))
    return QColor(stops[-1][1])


# warm for improbable tokens, cool for uncertain distributions, an orange for the KL; the log-ratio's two sides are
# ColorBrewer's PiYG (green where pi > pi_ref, pink where pi < pi_ref: a pair that stays apart under the common colour
# blindnesses, and apart from the other ramps)
SCALES = {
    "prob": ColourScale("prob", "π(token | prefix)", 1.0, 0.0,
                        ((0.0, "#f5cf4b"), (0.35, "#f49a32"), (0.7, "#e8484a"), (1.0, "#c8308a"))),
    "entropy": ColourScale("entropy", "entropy (nats)", 0.0, ENTROPY_FULL_SCALE,
                           ((0.0, "#5cc8e0"), (0.45, "#3e86e6"), (1.0, "#8451e0"))),
    "log_ratio": ColourScale("log_ratio", "log π − log π_ref (nats)", -LOG_RATIO_FULL_SCALE, LOG_RATIO_FULL_SCALE,
                             ((0.0, "#7fbc41"), (1.0, "#2e8b2e")), ((0.0, "#de77ae"), (1.0, "#c51b7d")), centre=0.0),
    "kl": ColourScale("kl", "KL(π ‖ π_ref) (nats)", 0.0, KL_FULL_SCALE, ((0.0, "#fdb863"), (1.0, "#b35806"))),
}
KL_COLOUR = "#e08214"  # a KL curve: the orange of the KL scale, apart from the accent and the log-ratio's pink and green
SHADING_MODES = ("prob", "entropy", "log_ratio")  # what the panes and the table shade by
SHADING_NAMES = {"prob": "probability", "entropy": "entropy", "log_ratio": "log-ratio to the reference"}


def _check_mode(mode: str) -> None:
    if mode not in SHADING_MODES:
        raise ValueError(f"unknown shading mode {mode!r}; expected one of {', '.join(SHADING_MODES)}")


def _shaded_value(mode: str, prob: float, entropy: float, log_ratio: Optional[float]) -> Optional[float]:
    return {"prob": prob, "entropy": entropy, "log_ratio": log_ratio}[mode]


def shade_strength(mode: str, prob: float, entropy: float, log_ratio: Optional[float] = None) -> float:
    """0 .. 1; for "log_ratio" signed, -1 .. 1 (0 for a token without reference facts: log_ratio None)."""
    _check_mode(mode)
    return SCALES[mode].strength(_shaded_value(mode, prob, entropy, log_ratio))


def shade_level(mode: str, prob: float, entropy: float, log_ratio: Optional[float] = None) -> int:
    """0 (no shade) .. SHADE_LEVELS; for "log_ratio" -SHADE_LEVELS .. SHADE_LEVELS, > 0 where pi > pi_ref."""
    return int(round(shade_strength(mode, prob, entropy, log_ratio) * SHADE_LEVELS))


def shade_colour(mode: str, level: int, palette: QPalette | None = None) -> QColor | None:
    """The background of a token at a shade level (SCALES[mode].colour); None for level 0."""
    _check_mode(mode)
    return SCALES[mode].colour(level, palette)


def card_colours(dark: bool) -> dict[str, str]:
    """The token hover card's colours (HTML): quiet text, the alternatives' bars, the bar of the token taken."""
    return {
        "muted": "#a0a4ab" if dark else "#5f6368",
        "bar": "#7d8590" if dark else "#9aa0a6",
        "bar_chosen": "#f49a32" if dark else "#e8710a",  # the orange of the probability ramp
        "track": "#3a3d42" if dark else "#e6e8eb",
        "chosen_bg": "#4a3b22" if dark else "#fdebd3",
    }


class ShadingLegend(QWidget):
    """A small colour bar saying what the shading means: '<label>  low [gradient] high'. In the log-ratio mode it also
    says when the session has no reference policy (every token is unshaded then, and the reader should know why)."""

    def __init__(self, options, parent: QWidget | None = None):
        """options: the views' ViewOptions (the shading shown)."""
        super().__init__(parent)
        self._options = options
        self._reference: Optional[str] = None  # what pi_ref is (its description); None: no reference
        options.changed.connect(self._on_option_changed)
        self.setToolTip(self._explanation())

    def _on_option_changed(self, name: str) -> None:
        if name == "shading":
            self._changed()

    @property
    def _mode(self) -> str:
        return self._options.shading

    @property
    def mode(self) -> str:
        return self._options.shading

    def set_reference_policy(self, description: Optional[str]) -> None:
        """The reference policy the log-ratios are against (its description), or None when the session has none."""
        if description != self._reference:
            self._reference = description
            self._changed()

    def _changed(self) -> None:
        self.setToolTip(self._explanation())
        self.updateGeometry()
        self.update()

    def _texts(self) -> tuple[str, str, str]:
        if self._mode == "log_ratio":
            return "log π/π_ref", f"{MINUS}{LOG_RATIO_FULL_SCALE:g}", f"+{LOG_RATIO_FULL_SCALE:g} nats"
        if self._mode == "entropy":
            return "entropy", "0", f"≥{ENTROPY_FULL_SCALE:g} nats"
        return "token p", "1", "0"

    def note(self) -> str:
        """What follows the bar: why nothing is shaded, when that is so."""
        return "no reference policy" if self._mode == "log_ratio" and self._reference is None else ""

    def _explanation(self) -> str:
        if self._mode == "log_ratio":
            text = ("Each token is shaded by log pi(token | context) - log pi_ref(token | context), the policy "
                    "against the reference policy: green where the policy finds the token likelier than the "
                    "reference, pink where it finds it less likely, unshaded where they agree. Full colour at "
                    f"±{LOG_RATIO_FULL_SCALE:g} nats (a ratio of about {math.exp(LOG_RATIO_FULL_SCALE):.1f}x).")
            if self._reference is None:
                return text + ("\nThis session has no reference policy: choose one in the side panel. Until it has "
                               "evaluated a rollout, that rollout's tokens stay unshaded.")
            return text + f"\nReference: {self._reference}. Tokens it has not evaluated yet stay unshaded."
        if self._mode == "entropy":
            return ("Each token is shaded by the entropy of the distribution it was drawn from: "
                    "the stronger the colour, the less sure the model was about what comes next.")
        return ("Each token is shaded by its raw probability pi(token | context) at temperature 1: "
                "the stronger the colour, the less likely the model found that token.")

    def _levels(self) -> range:
        return range(-SHADE_LEVELS, SHADE_LEVELS + 1) if self._mode == "log_ratio" else range(SHADE_LEVELS + 1)

    def _bar_width(self) -> int:
        return 160 if self._mode == "log_ratio" else 120

    def _note_font(self) -> QFont:
        font = QFont(self.font())
        font.setItalic(True)
        return font

    def sizeHint(self):  # noqa: N802 (Qt override)
        fm = self.fontMetrics()
        label, low, high = self._texts()
        width = sum(fm.horizontalAdvance(t) for t in (label, low, high)) + self._bar_width() + 30
        if self.note():
            width += QFontMetrics(self._note_font()).horizontalAdvance(self.note()) + 10
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
        levels = self._levels()
        step = self._bar_width() / len(levels)
        base = pal.color(QPalette.ColorRole.Base)
        for i, level in enumerate(levels):
            painter.fillRect(QRectF(x + i * step, top, step + 0.5, bar_h), shade_colour(self._mode, level, pal) or base)
        painter.setPen(QPen(muted_text(pal), 1))
        painter.drawRect(QRectF(x, top, self._bar_width(), bar_h))
        if self._mode == "log_ratio":  # where 0 (agreement) sits
            middle = x + self._bar_width() / 2
            painter.drawLine(QPointF(middle, top - 2), QPointF(middle, top + bar_h + 2))
        x += self._bar_width() + 5
        painter.setPen(pal.color(QPalette.ColorRole.Text))
        painter.drawText(QRectF(x, 0, fm.horizontalAdvance(high) + 2, h), Qt.AlignmentFlag.AlignVCenter, high)
        note = self.note()
        if note:
            x += fm.horizontalAdvance(high) + 10
            painter.setFont(self._note_font())
            painter.setPen(muted_text(pal))
            painter.drawText(QRectF(x, 0, self.width() - x, h), Qt.AlignmentFlag.AlignVCenter, note)
        painter.end()
