"""explorer.core stays free of Qt: importing every core module (and the CLI front end, once it exists) in a fresh
interpreter loads no PySide6 or pyqtgraph, so `rollout-explorer generate` runs where Qt is missing."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import explorer.core

QT_PACKAGES = ("PySide6", "shiboken6", "pyqtgraph", "PyQt5", "PyQt6")

PROBE = """
import importlib, importlib.util, json, pkgutil, sys
import explorer.core
names = sorted(m.name for m in pkgutil.walk_packages(explorer.core.__path__, "explorer.core."))
names += [n for n in ("explorer.cli",) if importlib.util.find_spec(n) is not None]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
"""


def test_core_modules_import_without_qt():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {m.name for m in pkgutil.walk_packages(explorer.core.__path__, "explorer.core.")}
    assert expected <= set(report["imported"])
    # the probe really loaded the heavy parts: the engine and llama.cpp's bindings
    assert {"explorer.core.engine.local", "explorer.core.engine.sampling", "explorer.core.files.export",
            "llama_cpp"} <= set(report["modules"])
    qt = [m for m in report["modules"] if m.split(".")[0] in QT_PACKAGES]
    assert qt == []
