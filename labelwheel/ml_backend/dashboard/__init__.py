"""``/dashboard``: the data lead's page, served by the ML backend behind the same basic auth.

Read-only views of one Label Studio project: coverage map, learning curve with the forecast,
budget planner, pre-label acceptance per version and class balance, drawn as PNGs (matplotlib,
Agg; no JavaScript library, no CDN). The planner's "write view" button is the one write: it saves
the Data Manager view "labelwheel: next N" exactly as ``labelwheel plan`` does.

The backend service (``current_app.extensions["labelwheel"]``) provides Label Studio's URL and
key, the store (model versions, acceptance) and the embedding cache. Without it (the blueprint in
a plain Flask app) the dashboard reads Label Studio directly with
``app.config["LABELWHEEL_DASHBOARD"]`` (keys ``url``, ``api_key``, ``cache_dir``, ``model_dir``,
``backbone``, ``image_size``) or the environment (``LABEL_STUDIO_URL``,
``LABEL_STUDIO_API_KEY``, ``MODEL_DIR``, ...).

Endpoints (all GET but the planner write):

=====================================  ============================================================
``/dashboard``                          HTML page (``?project=ID&target=0.95&budget=N&strategy=S``)
``/dashboard/api/summary``              JSON: report, clusters, forecast, acceptance
``/dashboard/api/plan``                 JSON: the picks for ``budget`` (nothing written)
``POST /dashboard/api/plan``            write the view; JSON body or form ``project, budget, ...``
                                        with a CSRF token (:mod:`labelwheel.ml_backend.csrf`)
``/dashboard/api/csrf``                 JSON: ``{"csrf_token": ...}`` for scripts that write
``/dashboard/api/audit``                JSON: suspected label errors (``labelwheel audit``'s
                                        library on the cached pool), top ``limit`` (20)
``/dashboard/coverage.png`` etc.        the plots: coverage, forecast, balance, acceptance
=====================================  ============================================================

The package: :mod:`.common` (blueprint, settings, arguments, errors), :mod:`.analysis` (the
cached per-project analysis), :mod:`.views` (the page), :mod:`.api` (JSON) and :mod:`.plots`.
"""

from __future__ import annotations

from labelwheel.ml_backend.dashboard import api, plots, views  # noqa: F401  (register routes)
from labelwheel.ml_backend.dashboard.analysis import CACHE_SECONDS, Analysis
from labelwheel.ml_backend.dashboard.common import DEFAULT_TARGET, STATE_KEY, DashboardError, bp

__all__ = ["CACHE_SECONDS", "DEFAULT_TARGET", "STATE_KEY", "Analysis", "DashboardError", "bp"]
