"""The labelwheel ML backend for Label Studio: a Flask app factory.

Development: ``labelwheel serve``. Production: ``gunicorn -w 1 --threads 8
'labelwheel.ml_backend:create_app()'`` — one worker process (one model instance, one training
worker, one writer of the state directory) with threads for concurrent requests. The process
locks ``MODEL_DIR`` (:mod:`labelwheel.ml_backend.dirlock`): a second process on the same
directory fails to start with :class:`ModelDirInUse`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from flask import Flask

from labelwheel.label_config import warm_up as warm_up_label_config
from labelwheel.ml_backend.config import ConfigError, Settings
from labelwheel.ml_backend.dirlock import ModelDirInUse, ModelDirLock
from labelwheel.ml_backend.link import LabelStudioLink
from labelwheel.ml_backend.metrics import Metrics
from labelwheel.ml_backend.model import Model
from labelwheel.ml_backend.store import Store, Version
from labelwheel.ml_backend.worker import Worker

if TYPE_CHECKING:  # pragma: no cover
    from labelwheel.label_config import ClassificationConfig

__all__ = ["BackendService", "ConfigError", "ModelDirInUse", "Settings", "create_app"]

log = logging.getLogger("labelwheel.ml_backend")

EXTENSION_KEY = "labelwheel"


class BackendService:
    """Everything one backend process shares across requests: settings, store, model, worker.

    The dashboard blueprint reaches it as ``current_app.extensions["labelwheel"]`` and may use
    ``store`` (versions, annotations, runs), ``model`` (``embed_refs``, ``current(project)``,
    ``rank_pool``), ``config_for(project)`` and ``link.client()``.
    """

    def __init__(self, settings: Settings, backbone_loader: Any = None) -> None:
        self.settings = settings
        self.pid = os.getpid()  # the process whose threads serve (see plumbing.install_hooks)
        # first of all: a second process on this MODEL_DIR stops here (ModelDirInUse)
        self.dir_lock = ModelDirLock(settings.model_dir)
        self.dir_lock.acquire()
        try:
            self._open(settings, backbone_loader)
        except BaseException:
            self.dir_lock.release()
            raise

    def _open(self, settings: Settings, backbone_loader: Any) -> None:
        self.store = Store(settings.model_dir)
        interrupted = self.store.mark_interrupted_runs()
        if interrupted:
            log.warning("%d training run(s) were interrupted by a previous shutdown", interrupted)
        compacted = self.store.compact_events()
        if compacted:
            log.info("events log: %d raw webhook payloads replaced by summaries", compacted)
        self.store.configure_events(
            settings.events_max, settings.events_days * 86_400.0 if settings.events_days else None
        )
        self.link = LabelStudioLink(settings)
        self.model = Model(settings, self.store, self.link, backbone_loader=backbone_loader)
        self.metrics = Metrics()
        self._configs: OrderedDict[str, ClassificationConfig] = OrderedDict()
        self._configs_lock = threading.Lock()
        self.worker = Worker(
            self.model,
            self.store,
            self.config_for,
            on_version=self.publish_later,
            on_run=self.metrics.count_run,
        )
        self.published: dict[int, str] = {}
        self.publish_errors: dict[int, str] = {}
        # per project: (tasks predicted, tasks to predict) of the publish under way
        self.publishing: dict[int, tuple[int, int]] = {}
        # per project: the publisher thread and the newest version it still owes
        self._publishers: dict[int, threading.Thread] = {}
        self._publish_owed: dict[int, Version] = {}
        self._publish_lock = threading.Lock()
        self._closing = False

    def start(self) -> None:
        """Load the serving version of every known project (the newest readable artifact;
        unreadable ones are logged now, not at the first request), then start the background
        threads, which first re-queue the trainings owed from before a restart."""
        warm_up_label_config()  # the first /setup must answer within Label Studio's 3 s
        for project_id in self.store.project_ids():
            self.model.current(project_id)
        self.worker.start()

    def close(self) -> None:
        """Stop background threads and close the database."""
        with self._publish_lock:
            self._closing = True
            self._publish_owed.clear()
        self.worker.stop()
        self.model.close()
        self.store.close()
        self.dir_lock.release()

    def parse_config(self, xml: str) -> ClassificationConfig:
        """Parse a label config (cached by text); raises ``UnsupportedConfigError``."""
        with self._configs_lock:
            cached = self._configs.get(xml)
            if cached is not None:
                self._configs.move_to_end(xml)
                return cached
        from labelwheel.label_config import parse_classification_config

        config = parse_classification_config(xml)
        with self._configs_lock:
            self._configs[xml] = config
            while len(self._configs) > 64:
                self._configs.popitem(last=False)
        return config

    def config_for(self, project_id: int) -> ClassificationConfig | None:
        """The stored, parseable label config of a project, or None."""
        row = self.store.get_project(project_id)
        if not row or not row.get("label_config"):
            return None
        try:
            return self.parse_config(str(row["label_config"]))
        except ValueError:
            return None

    def publish_later(self, project_id: int, version: Version) -> None:
        """Publish in the project's own publisher thread, so that the training thread goes on
        with other projects' trainings while a large pool is ranked and its predictions are
        written; versions that arrive meanwhile are coalesced (the newest is published)."""
        with self._publish_lock:
            if self._closing:
                return
            self._publish_owed[project_id] = version
            thread = self._publishers.get(project_id)
            if thread is not None and thread.is_alive():
                return
            thread = threading.Thread(
                target=self._publish_loop,
                args=(project_id,),
                name=f"lw-publish-{project_id}",
                daemon=True,
            )
            self._publishers[project_id] = thread
            thread.start()

    def _publish_loop(self, project_id: int) -> None:
        while True:
            with self._publish_lock:
                version = self._publish_owed.pop(project_id, None)
                if version is None or self._closing:
                    self._publishers.pop(project_id, None)
                    return
            try:
                self.publish(project_id, version)
            except Exception:  # never let a bug kill the publisher silently
                log.exception("project %d: publishing %s failed", project_id, version.name)

    def publish(self, project_id: int, version: Version) -> None:
        """After a training: warm the pool ranking, write the new version's predictions for
        every unlabelled task into Label Studio (imported in paced chunks, see
        :mod:`labelwheel.publishing`), then switch the project's model version. Skipped when
        publishing is off or Label Studio's URL and key are unknown.
        """
        config = self.config_for(project_id)
        if config is not None:
            self.model.rank_pool(project_id, config)
        if not self.settings.publish:
            return
        client = self.link.client()
        if client is None:
            log.info(
                "project %d: %s not published (no Label Studio URL/key)", project_id, version.name
            )
            return
        from labelwheel.publishing import publish_version

        def progress(done: int, total: int) -> None:
            self.publishing[project_id] = (done, total)
            log.info(
                "project %d: publishing %s: %d of %d tasks", project_id, version.name, done, total
            )

        try:
            if config is None:  # no /setup seen since the start: Label Studio asks /predict
                publish_version(
                    client, project_id, version.name, pacing=self.settings.pacing, progress=progress
                )
            else:
                model, known = self.model, config

                def predict(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
                    results, _failed, _deferred = model.predict(project_id, known, tasks)
                    # no deadline, so nothing deferred: one prediction (a dict) per task
                    return cast(list[dict[str, Any]], results)

                publish_version(
                    client,
                    project_id,
                    version.name,
                    predict,
                    pacing=self.settings.pacing,
                    progress=progress,
                )
        except Exception as exc:
            self.publish_errors[project_id] = str(exc)
            log.error("project %d: publishing %s failed: %s", project_id, version.name, exc)
            return
        finally:
            self.publishing.pop(project_id, None)
        self.published[project_id] = version.name
        self.publish_errors.pop(project_id, None)
        log.info("project %d: published %s to Label Studio", project_id, version.name)


def create_app(
    test_config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Flask:
    """Build the backend app.

    ``test_config`` maps setting names (``MODEL_DIR``, ``LABELWHEEL_IMAGE_SIZE``, ...) to values
    that override the environment; other keys, e.g. ``TESTING`` or ``BACKBONE_LOADER`` (a
    callable returning a loaded backbone, shared between apps in tests), configure Flask and the
    app. Raises :class:`ConfigError` for a bad setting.
    """
    from labelwheel.ml_backend.config import VARIABLES

    overrides = dict(test_config or {})
    names = {v.name for v in VARIABLES}
    settings_over = {k: overrides.pop(k) for k in list(overrides) if k in names}
    backbone_loader = overrides.pop("BACKBONE_LOADER", None)
    settings = Settings.from_env(os.environ if environ is None else environ, settings_over)
    package_log = logging.getLogger("labelwheel")
    package_log.setLevel(settings.log_level_number())
    if not logging.getLogger().handlers and not package_log.handlers:
        # e.g. under gunicorn, which configures only its own loggers
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        package_log.addHandler(handler)

    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        JSON_SORT_KEYS=False,
    )
    app.config.update(overrides)
    service = BackendService(settings, backbone_loader=backbone_loader)
    app.extensions[EXTENSION_KEY] = service

    # the endpoint rooms register on the one blueprint ``ml_backend`` when imported
    from labelwheel.ml_backend import routes, routes_annotations, routes_versions  # noqa: F401
    from labelwheel.ml_backend.plumbing import bp, install_hooks

    install_hooks(app)
    app.register_blueprint(bp)
    try:
        from labelwheel.ml_backend.dashboard import bp as dashboard_bp
    except ImportError as exc:
        log.debug("dashboard not available: %s", exc)
    else:
        app.register_blueprint(dashboard_bp)

    if settings.auth_enabled:
        log.info("basic auth required on every endpoint but /health")
    else:
        log.warning(
            "BASIC_AUTH_USER/BASIC_AUTH_PASS are not set: the backend is OPEN to anyone who can "
            "reach it"
        )
    service.start()
    return app


def get_service(app: Flask) -> BackendService:
    """The :class:`BackendService` of an app made by :func:`create_app`."""
    service = app.extensions[EXTENSION_KEY]
    assert isinstance(service, BackendService)
    return service
