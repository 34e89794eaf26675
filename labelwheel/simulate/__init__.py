"""Pool-based active-learning simulator: how many labels does each selector save?

It replays the labelling loop on a labelled set with the product's own head
(:mod:`labelwheel.head`) and selectors, so its figures are promises about the backend.

- :func:`run_simulation` and the loop's pieces (:mod:`labelwheel.simulate.loop`);
- :class:`SimulationResults`, :func:`labels_to_reach`, :func:`plot_curves`
  (:mod:`labelwheel.simulate.results`);
- :func:`load_features` (:mod:`labelwheel.simulate.data`);
- ``labelwheel simulate`` (:mod:`labelwheel.simulate.cli`).
"""

from __future__ import annotations

from typing import Any

from labelwheel.simulate.data import load_features
from labelwheel.simulate.loop import (
    DEFAULT_STRATEGIES,
    Classifier,
    Picker,
    RoundState,
    available_strategies,
    run_simulation,
    selector_picker,
)
from labelwheel.simulate.results import (
    TARGET_FRACTION,
    SimulationResults,
    labels_to_reach,
    plot_curves,
)

__all__ = [
    "DEFAULT_STRATEGIES",
    "TARGET_FRACTION",
    "Classifier",
    "Picker",
    "RoundState",
    "SimulationResults",
    "available_strategies",
    "labels_to_reach",
    "load_features",
    "plot_curves",
    "run_simulation",
    "selector_picker",
    "simulate_command",
]


def __getattr__(name: str) -> Any:
    # The command is imported lazily so that the library does not need click's import.
    if name == "simulate_command":
        from labelwheel.simulate.cli import simulate_command

        return simulate_command
    raise AttributeError(name)
