"""``labelwheel up`` / ``labelwheel down``: the local demo that ``make up`` / ``make down`` run.

``up`` starts a local Label Studio and the labelwheel ML backend, creates a demo
image-classification project with real images (handwritten digits), uploads them, connects the
backend (``labelwheel connect``), imports its predictions and prints the URL, the login and what to
do next. Everything lives in one state directory, re-used on the next run:

=====================  ==========================================================================
``state.json``         credentials (generated once, file mode 0600), ports, project, process ids
``label-studio/``      Label Studio's data dir (SQLite database, uploads) and ``label-studio.log``
``model/``             the backend's ``MODEL_DIR`` (annotations, versions, embedding cache)
``images/``            the demo PNGs and their held-back answers (``ground_truth.csv``)
``logs/backend.log``   the backend's log
=====================  ==========================================================================

In the foreground ``up`` stays until Ctrl-C (SIGINT) or SIGTERM and then stops both processes;
with ``--detach`` it returns and ``down`` stops them later by their recorded process ids.
"""

from labelwheel.demo.state import (
    IMAGES_DIR,
    LS_DIR,
    STATE_FILE,
    DemoError,
    DemoState,
    stop_recorded_processes,
)

__all__ = [
    "IMAGES_DIR",
    "LS_DIR",
    "STATE_FILE",
    "DemoError",
    "DemoState",
    "stop_recorded_processes",
]
