"""Errors the core raises on purpose. Each message names the file or value and says what is wrong."""


class ExplorerError(Exception):
    """Base of every error meant to be shown to a user as it is (one line, no traceback)."""


class ModelError(ExplorerError):
    """A model file that cannot be used: not a GGUF, truncated, unsupported, not a text generator."""


class EngineError(ExplorerError):
    """llama.cpp refused or failed (load, context creation, decode)."""


class ContextOverflowError(EngineError):
    """A prompt (plus what must be generated after it) does not fit the context."""


class RolloutFileError(ExplorerError):
    """A rollout-set JSON file that cannot be read: malformed JSON, another format or version, schema violation."""


class RewardError(ExplorerError):
    """A reward function that cannot be loaded (missing file, no reward() defined, import error)."""


class LoadCancelled(ExplorerError):
    """The user stopped reading a file (the window's Cancel on a large set's progress)."""


class SamplingParamsError(ExplorerError):
    """Sampling parameters out of range (temperature < 0, top-p outside (0, 1], ...); names each one."""
