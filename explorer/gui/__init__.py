"""Everything Qt: the main window, the engine worker thread, the views. `explorer.gui.app.run_gui` starts it."""
