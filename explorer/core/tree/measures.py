"""What a box's colour measures: one value per node of a token tree, and one per run (a chain without a fork, drawn
as one box while its tokens are too narrow to read), by colouring.

A run's value is the mean per token of its nodes' values: the mean entropy, the mean log-ratio, the mean KL; for pi
the geometric mean, exp(mean log pi), which is 1 / the perplexity of the run's tokens (an arithmetic mean of
probabilities would let one sure token hide an unlikely one less than the sequence's own probability does). Unknown
values (NaN: no reference facts yet) are left out of the mean; a run with none known is unknown.

Adding a colouring is one entry in _NODE_VALUES (and, when a run's mean is taken in another space, in _LOG_MEAN);
the colour scale that draws it is the GUI's (explorer.gui.widgets.style.SCALES).
"""

from __future__ import annotations

import numpy as np

from explorer.core.tree.icicle import Icicle

COLOURINGS = ("prob", "entropy", "log_ratio", "kl")
REFERENCE_COLOURINGS = ("log_ratio", "kl")  # the colourings that need reference facts

_NODE_VALUES = {
    "prob": lambda tree: np.exp(np.asarray(tree.logprobs, dtype=np.float64)),  # NaN where no logprob was recorded
    "entropy": lambda tree: np.asarray(tree.entropies, dtype=np.float64),
    "log_ratio": lambda tree: tree.log_ratios,
    "kl": lambda tree: np.asarray(tree.kls, dtype=np.float64),
}
# colourings whose run mean is taken over the logarithm of the node values: pi's mean is the geometric one
_LOG_MEAN = {"prob": lambda tree: np.asarray(tree.logprobs, dtype=np.float64)}

RUN_MEAN_WORDS = {"prob": "exp(mean log π) of its tokens (1 / their perplexity)",
                  "entropy": "the mean entropy of its tokens", "log_ratio": "the mean log-ratio of its tokens",
                  "kl": "the mean KL of its tokens"}


def _check(colouring: str) -> None:
    if colouring not in _NODE_VALUES:
        raise ValueError(f"unknown tree colouring {colouring!r}; expected one of {', '.join(COLOURINGS)}")


def node_values(tree, colouring: str) -> np.ndarray:
    """The value every node is coloured by (float64, NaN where unknown)."""
    _check(colouring)
    with np.errstate(invalid="ignore", over="ignore"):
        return _NODE_VALUES[colouring](tree)


def run_values(tree, ice: Icicle, colouring: str) -> np.ndarray:
    """The value every run of the icicle is coloured by: the mean per token of its nodes' values (see the module
    doc); NaN where none of them is known."""
    _check(colouring)
    logs = colouring in _LOG_MEAN
    with np.errstate(invalid="ignore", over="ignore"):
        values = _LOG_MEAN[colouring](tree) if logs else _NODE_VALUES[colouring](tree)
    n_runs = len(ice.run_head)
    taken = np.flatnonzero(ice.run_of >= 0)
    taken = taken[~np.isnan(values[taken])]
    runs = ice.run_of[taken]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (np.bincount(runs, weights=values[taken], minlength=n_runs)
                / np.bincount(runs, minlength=n_runs))  # 0 / 0 -> NaN: nothing known in the run
        return np.exp(mean) if logs else mean
