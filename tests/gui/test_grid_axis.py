"""FastGridAxis paints the same pixels as pyqtgraph's AxisItem, grid included, at any range; exports fall back."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pytest

from explorer.gui.widgets.grid_axis import FastGridAxis


def _plot(qtbot, axis: pg.AxisItem, dark: bool) -> pg.GraphicsLayoutWidget:
    widget = pg.GraphicsLayoutWidget()
    qtbot.addWidget(widget)
    widget.setBackground((30, 30, 30) if dark else (250, 250, 250))
    plot = widget.addPlot(axisItems={"bottom": axis})
    plot.showGrid(x=True, y=False, alpha=0.12)
    axis.setPen((160, 160, 160) if dark else (90, 90, 90))
    axis.setCacheMode(axis.CacheMode.DeviceCoordinateCache)  # as the tree view caches it
    # data under the grid: translucent grid lines must blend with it exactly as before
    plot.plot(np.arange(200) * 0.7, np.sin(np.arange(200) / 7.0), pen=pg.mkPen((200, 60, 40), width=3))
    widget.resize(731, 413)
    widget.show()
    return widget


def _pixels(widget) -> np.ndarray:
    image = widget.grab().toImage().convertToFormat(pg.QtGui.QImage.Format.Format_RGBA8888)
    return np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.width(), 4).copy()


@pytest.mark.parametrize("dark", [False, True])
@pytest.mark.parametrize("x_range", [None, (3.3, 40.7), (-2.1, 17.77), (0.0, 1.0e4)])
def test_same_pixels_as_axis_item(qtbot, dark, x_range):
    fast, plain = _plot(qtbot, FastGridAxis("bottom"), dark), _plot(qtbot, pg.AxisItem("bottom"), dark)
    for widget in (fast, plain):
        if x_range is not None:
            widget.ci.getItem(0, 0).setXRange(*x_range, padding=0)
    qtbot.waitExposed(fast)
    qtbot.waitExposed(plain)
    a, b = _pixels(fast), _pixels(plain)
    grid_columns = np.flatnonzero(np.abs(a[a.shape[0] // 3].astype(int) - a[a.shape[0] // 3, 0]).max(1) > 0)
    assert len(grid_columns) >= 3  # the grid is drawn at all (the comparison is not between two empty plots)
    assert np.array_equal(a, b)


def test_export_uses_pyqtgraph_paint(qtbot, tmp_path):
    widget = _plot(qtbot, FastGridAxis("bottom"), dark=False)
    qtbot.waitExposed(widget)
    path = tmp_path / "plot.png"
    pg.exporters.ImageExporter(widget.ci).export(str(path))
    assert path.stat().st_size > 0
