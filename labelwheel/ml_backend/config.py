"""Settings of the ML backend, read from the environment and validated.

Every variable is listed in :data:`VARIABLES` with its default and help text; ``labelwheel serve
--help`` and ``docs/ml-backend.md`` are generated from that list. A bad value raises
:class:`ConfigError`, whose message names the variable and says what is allowed.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from labelwheel.features import DEFAULT_BACKBONE
from labelwheel.media.proxies import Proxies
from labelwheel.media.tls import check_trust
from labelwheel.publishing import PublishPacing
from labelwheel.semisup import DEFAULT_SEMI, SEMI_MODES


class ConfigError(ValueError):
    """A setting has a value the backend cannot use; the message names the variable."""


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, default (as text) and help."""

    name: str
    default: str | None
    help: str


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "LABEL_STUDIO_URL",
        None,
        "Label Studio base URL (http://host:port). Used to fetch the unlabelled pool, uploaded "
        "images, and to publish new model versions. Unset: the hostname sent to /setup, only "
        "with the access_token of that same /setup (never with LABEL_STUDIO_API_KEY); a /setup "
        "hostname never replaces it.",
    ),
    Variable(
        "LABEL_STUDIO_API_KEY",
        None,
        "Label Studio legacy API token or personal access token, used only with "
        "LABEL_STUDIO_URL. Falls back to the access_token sent to /setup (a legacy token, "
        "refused once an organisation turns legacy tokens off).",
    ),
    Variable(
        "MODEL_DIR",
        "./model_dir",
        "Directory holding all state: SQLite database, model artifacts, embedding cache.",
    ),
    Variable(
        "BASIC_AUTH_USER", None, "HTTP basic auth user required on every endpoint but /health."
    ),
    Variable("BASIC_AUTH_PASS", None, "HTTP basic auth password (set both or neither)."),
    Variable(
        "LABELWHEEL_STRATEGY",
        "adaptive",
        "Selector that ranks the unlabelled pool (one of labelwheel.selectors.STRATEGIES).",
    ),
    Variable(
        "LABELWHEEL_HEAD_SEMI",
        DEFAULT_SEMI,
        "Semi-supervised head: spreading (label spreading on the kNN graph of the pool's "
        "embeddings, pseudo-labels where it agrees with the plain head), self_training, or "
        "none (the plain head); calibration stays on real labels. A pool ranking saves the "
        "pool's embeddings (MODEL_DIR/projects/<id>/pool.npy) for the training process; "
        "until the first ranking a training uses the plain head.",
    ),
    Variable(
        "LABELWHEEL_CONTROL_FRACTION",
        "0.05",
        "Share of the queue served at random (the control slice, evenly interleaved and recorded "
        "per version) to estimate each version's real accuracy without the selector's bias; "
        "0 = off, at most 0.5.",
    ),
    Variable(
        "LABELWHEEL_PUBLISH_DUTY",
        "0.5",
        "Largest share of the time the backend spends writing predictions into Label Studio "
        "(prediction imports, score updates): after a chunk that took t seconds it "
        "pauses t*(1-duty)/duty (0.25 to 30 s), so annotators' requests on Label Studio's SQLite "
        "get their turn; a busy Label Studio slows the writes down. 0.05 to 1.",
    ),
    Variable(
        "LABELWHEEL_PUBLISH_CHUNK",
        "2000",
        "Tasks per prediction import request when the backend publishes a version (Label "
        "Studio's cost per request grows with the project: few large chunks). 1 to 5000.",
    ),
    Variable(
        "LABELWHEEL_RETRAIN_EVERY",
        "10",
        "Retrain after this many new, changed or deleted annotations; 0 = only on START_TRAINING.",
    ),
    Variable(
        "LABELWHEEL_BACKBONE",
        DEFAULT_BACKBONE,
        "Image backbone: efficientnet-lite0..4 or torchvision:<model> (weights must be cached).",
    ),
    Variable("LABELWHEEL_IMAGE_SIZE", "224", "Backbone input size in pixels (16-1024)."),
    Variable("LABELWHEEL_BATCH_SIZE", "32", "Images per backbone forward pass (1-1024)."),
    Variable(
        "LABELWHEEL_INFERENCE",
        "auto",
        "What runs the backbone: auto (torch on a GPU if present, else ONNX Runtime on the CPU, "
        "exported once per machine; torch if that fails, logged), torch, or onnx.",
    ),
    Variable(
        "LABELWHEEL_MAX_IMAGE_BYTES", str(20 * 2**20), "Largest image file fetched, in bytes."
    ),
    Variable(
        "LABELWHEEL_MAX_IMAGE_PIXELS",
        "40000000",
        "Largest decoded image in pixels (decompression-bomb guard).",
    ),
    Variable(
        "LABELWHEEL_FETCH_TIMEOUT",
        "10",
        "One total deadline per image fetch (connecting, headers, body and redirects together), "
        "in seconds.",
    ),
    Variable(
        "LABELWHEEL_ALLOWED_HOSTS",
        "",
        "Comma-separated host names whose absolute http(s) image URLs may be fetched (SSRF "
        "guard); the Label Studio host is always allowed.",
    ),
    Variable(
        "LABELWHEEL_LOCAL_FILES_ROOT",
        None,
        "Directory that /data/local-files/?d=... paths resolve under (same as Label Studio's "
        "LOCAL_FILES_DOCUMENT_ROOT); unset = local files refused.",
    ),
    Variable(
        "LABELWHEEL_PUBLISH",
        "true",
        "After each training, bring Label Studio the new predictions and set the project's model "
        "version (true/false).",
    ),
    Variable(
        "LABELWHEEL_RANK_DEPTH",
        "1000",
        "How many pool tasks the selector ranks exactly; the rest follow in task order.",
    ),
    Variable(
        "LABELWHEEL_MAX_REQUEST_BYTES",
        str(64 * 2**20),
        "Largest request body accepted, in bytes (larger: 413).",
    ),
    Variable(
        "LABELWHEEL_MAX_PREDICT_TASKS",
        "10000",
        "Most tasks accepted in one /predict request (more: 413). Any number up to it is "
        "processed in chunks of LABELWHEEL_BATCH_SIZE images, so memory does not grow with it.",
    ),
    Variable(
        "LABELWHEEL_PREDICT_BUDGET",
        "60",
        "Seconds a /predict may spend reading and embedding images before it answers with the "
        "tasks done: the others get no prediction this time (an empty list, which Label Studio "
        "skips without an error). Once their images are embedded, the backend has Label Studio "
        "retrieve their predictions (with a Label Studio key and LABELWHEEL_PUBLISH on; "
        "otherwise the next 'Retrieve predictions' asks for them). Keep it under Label "
        "Studio's ML_TIMEOUT_PREDICT (100 s by default). The first batch of images is always "
        "done; 0 = no limit.",
    ),
    Variable(
        "LABELWHEEL_PREDICT_POOL_WAIT",
        "0.5",
        "Seconds a /predict waits for the project's background pool ranking (listing, embedding "
        "and ranking every unlabelled task) before it answers with provisional scores, which "
        "are replaced in Label Studio once the ranking is ready (0-60).",
    ),
    Variable(
        "LABELWHEEL_POOL_JOBS",
        "2",
        "Pool rankings run at the same time, one per project at most; others wait, queued (1-64).",
    ),
    Variable(
        "LABELWHEEL_EVENTS_MAX",
        "100000",
        "Webhook events kept in the events log (a summary of at most 2 KB each, never the raw "
        "payload); older ones are deleted. 0 = no events log.",
    ),
    Variable(
        "LABELWHEEL_EVENTS_DAYS",
        "30",
        "Days a webhook event summary is kept in the events log; 0 = no age limit.",
    ),
    Variable(
        "LABELWHEEL_S3_DIRECT_BUCKETS",
        None,
        "Comma-separated S3 buckets whose s3:// images the backend reads itself, with boto3 and "
        "its own AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a "
        "role); unset = every cloud image is read through Label Studio (no storage credentials).",
    ),
    Variable(
        "LABELWHEEL_S3_ENDPOINT_URL",
        None,
        "S3-compatible endpoint for LABELWHEEL_S3_DIRECT_BUCKETS (MinIO, Ceph, R2...), e.g. "
        "http://minio:9000; unset = AWS.",
    ),
    Variable("LABELWHEEL_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR."),
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def variables_help() -> str:
    """All environment variables with their defaults and help, one block per variable."""
    lines = []
    for var in VARIABLES:
        default = "unset" if var.default is None else repr(var.default)
        lines.append(f"{var.name} (default {default}): {var.help}")
    return "\n".join(lines)


def _strategies() -> tuple[str, ...]:
    from labelwheel.selectors import STRATEGIES

    return tuple(STRATEGIES)


def _inference(value: Any) -> str:
    from labelwheel.features.runtime import inference_mode

    try:
        return inference_mode(str(value))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


@dataclass(frozen=True)
class Settings:
    """Validated settings of one backend process."""

    label_studio_url: str | None = None
    label_studio_api_key: str | None = None
    model_dir: Path = Path("model_dir")
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = None
    strategy: str = "adaptive"
    head_semi: str = DEFAULT_SEMI
    retrain_every: int = 10
    backbone: str = DEFAULT_BACKBONE
    image_size: int = 224
    batch_size: int = 32
    inference: str = "auto"
    max_image_bytes: int = 20 * 2**20
    max_image_pixels: int = 40_000_000
    fetch_timeout: float = 10.0
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    local_files_root: Path | None = None
    publish: bool = True
    rank_depth: int = 1000
    control_fraction: float = 0.05
    publish_duty: float = 0.5
    publish_chunk: int = 2000
    max_request_bytes: int = 64 * 2**20
    max_predict_tasks: int = 10_000
    predict_budget: float = 60.0
    predict_pool_wait: float = 0.5
    pool_jobs: int = 2
    events_max: int = 100_000
    events_days: int = 30
    s3_direct_buckets: frozenset[str] = field(default_factory=frozenset)
    s3_endpoint_url: str | None = None
    log_level: str = "INFO"
    # HTTP proxies for image fetches: HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY (read by
    # from_env, as requests reads them for the Label Studio API; none when made directly)
    proxies: Proxies = field(default_factory=Proxies, compare=False)

    @property
    def pacing(self) -> PublishPacing:
        """How the backend paces its writes into Label Studio (``LABELWHEEL_PUBLISH_DUTY``)."""
        return PublishPacing(chunk_size=self.publish_chunk, duty=self.publish_duty)

    @property
    def auth_enabled(self) -> bool:
        """True when basic auth credentials are configured."""
        return bool(self.basic_auth_user) and bool(self.basic_auth_pass)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """Read and validate the settings; ``overrides`` (variable name -> value) win.

        Raises :class:`ConfigError` naming the first bad variable.
        """
        values: dict[str, Any] = {}
        for var in VARIABLES:
            raw = environ.get(var.name)
            if raw is None or raw.strip() == "":
                raw = var.default
            values[var.name] = raw
        for key, value in (overrides or {}).items():
            if key not in values:
                raise ConfigError(
                    f"unknown setting {key!r}; known: {', '.join(v.name for v in VARIABLES)}"
                )
            values[key] = value
        settings = cls._validate(values)
        try:
            proxies = Proxies.from_environment(environ)
            check_trust(environ)  # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, if set, must load
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return dataclasses.replace(settings, proxies=proxies)

    @classmethod
    def _validate(cls, v: dict[str, Any]) -> Settings:
        url = _opt_str(v["LABEL_STUDIO_URL"])
        if url is not None:
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ConfigError(
                    "LABEL_STUDIO_URL must be an http(s) URL like http://127.0.0.1:8080, "
                    f"got {url!r}"
                )
            url = url.rstrip("/")
        user = _opt_str(v["BASIC_AUTH_USER"])
        password = _opt_str(v["BASIC_AUTH_PASS"])
        if (user is None) != (password is None):
            missing = "BASIC_AUTH_PASS" if password is None else "BASIC_AUTH_USER"
            raise ConfigError(f"{missing} must be set too: set both BASIC_AUTH_* or neither")
        if user is not None and ":" in user:
            raise ConfigError("BASIC_AUTH_USER must not contain ':'")
        strategy = str(v["LABELWHEEL_STRATEGY"]).strip()
        allowed = _strategies()
        if strategy not in allowed:
            raise ConfigError(
                f"LABELWHEEL_STRATEGY must be one of {', '.join(allowed)}, got {strategy!r}"
            )
        head_semi = str(v["LABELWHEEL_HEAD_SEMI"]).strip().lower()
        if head_semi not in SEMI_MODES:
            raise ConfigError(
                f"LABELWHEEL_HEAD_SEMI must be one of {', '.join(SEMI_MODES)}, got {head_semi!r}"
            )
        backbone = str(v["LABELWHEEL_BACKBONE"]).strip()
        if not (backbone.startswith("efficientnet-lite") or backbone.startswith("torchvision:")):
            raise ConfigError(
                "LABELWHEEL_BACKBONE must be efficientnet-lite0..4 or torchvision:<model>, "
                f"got {backbone!r}"
            )
        root = _opt_str(v["LABELWHEEL_LOCAL_FILES_ROOT"])
        local_root: Path | None = None
        if root is not None:
            local_root = Path(root).expanduser()
            if not local_root.is_dir():
                raise ConfigError(
                    f"LABELWHEEL_LOCAL_FILES_ROOT must be an existing directory, got {root!r}"
                )
            local_root = local_root.resolve()
        hosts_raw = v["LABELWHEEL_ALLOWED_HOSTS"] or ""
        if isinstance(hosts_raw, str):
            hosts = [h.strip().lower() for h in hosts_raw.split(",") if h.strip()]
        else:
            hosts = [str(h).strip().lower() for h in hosts_raw]
        for host in hosts:
            if "/" in host or " " in host:
                raise ConfigError(
                    f"LABELWHEEL_ALLOWED_HOSTS must be comma-separated host names, got {host!r}"
                )
        level = str(v["LABELWHEEL_LOG_LEVEL"]).strip().upper()
        if level not in _LOG_LEVELS:
            raise ConfigError(f"LABELWHEEL_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}")
        s3_buckets, s3_endpoint = _s3_direct(v)
        model_dir = Path(str(v["MODEL_DIR"])).expanduser()
        if model_dir.exists() and not model_dir.is_dir():
            raise ConfigError(f"MODEL_DIR must be a directory, got the file {str(model_dir)!r}")
        return cls(
            label_studio_url=url,
            label_studio_api_key=_opt_str(v["LABEL_STUDIO_API_KEY"]),
            model_dir=model_dir,
            basic_auth_user=user,
            basic_auth_pass=password,
            strategy=strategy,
            head_semi=head_semi,
            retrain_every=_int("LABELWHEEL_RETRAIN_EVERY", v, 0, 1_000_000),
            backbone=backbone,
            image_size=_int("LABELWHEEL_IMAGE_SIZE", v, 16, 1024),
            batch_size=_int("LABELWHEEL_BATCH_SIZE", v, 1, 1024),
            inference=_inference(v["LABELWHEEL_INFERENCE"]),
            max_image_bytes=_int("LABELWHEEL_MAX_IMAGE_BYTES", v, 1024, 2**31),
            max_image_pixels=_int("LABELWHEEL_MAX_IMAGE_PIXELS", v, 256, 2**31),
            fetch_timeout=_float("LABELWHEEL_FETCH_TIMEOUT", v, 0.1, 600.0),
            allowed_hosts=frozenset(hosts),
            local_files_root=local_root,
            publish=_bool("LABELWHEEL_PUBLISH", v),
            rank_depth=_int("LABELWHEEL_RANK_DEPTH", v, 1, 10_000_000),
            control_fraction=_float("LABELWHEEL_CONTROL_FRACTION", v, 0.0, 0.5),
            publish_duty=_float("LABELWHEEL_PUBLISH_DUTY", v, 0.05, 1.0),
            publish_chunk=_int("LABELWHEEL_PUBLISH_CHUNK", v, 1, 5000),
            max_request_bytes=_int("LABELWHEEL_MAX_REQUEST_BYTES", v, 1024, 2**34),
            max_predict_tasks=_int("LABELWHEEL_MAX_PREDICT_TASKS", v, 1, 10_000_000),
            predict_budget=_float("LABELWHEEL_PREDICT_BUDGET", v, 0.0, 3600.0),
            predict_pool_wait=_float("LABELWHEEL_PREDICT_POOL_WAIT", v, 0.0, 60.0),
            pool_jobs=_int("LABELWHEEL_POOL_JOBS", v, 1, 64),
            events_max=_int("LABELWHEEL_EVENTS_MAX", v, 0, 1_000_000_000),
            events_days=_int("LABELWHEEL_EVENTS_DAYS", v, 0, 36_500),
            s3_direct_buckets=s3_buckets,
            s3_endpoint_url=s3_endpoint,
            log_level=level,
        )

    def log_level_number(self) -> int:
        """The logging module's number for :attr:`log_level`."""
        return int(logging.getLevelName(self.log_level))


_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


def _s3_direct(v: dict[str, Any]) -> tuple[frozenset[str], str | None]:
    """LABELWHEEL_S3_DIRECT_BUCKETS and LABELWHEEL_S3_ENDPOINT_URL, validated."""
    raw = v["LABELWHEEL_S3_DIRECT_BUCKETS"] or ""
    items = raw.split(",") if isinstance(raw, str) else [str(b) for b in raw]
    buckets = frozenset(b.strip() for b in items if b.strip())
    for bucket in sorted(buckets):
        if not _S3_BUCKET.fullmatch(bucket):
            raise ConfigError(
                "LABELWHEEL_S3_DIRECT_BUCKETS must be comma-separated S3 bucket names "
                f"(3-63 of a-z 0-9 . -), got {bucket!r}"
            )
    endpoint = _opt_str(v["LABELWHEEL_S3_ENDPOINT_URL"])
    if endpoint is not None:
        parsed = urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(
                "LABELWHEEL_S3_ENDPOINT_URL must be an http(s) URL like http://minio:9000, "
                f"got {endpoint!r}"
            )
        endpoint = endpoint.rstrip("/")
    if buckets:
        from labelwheel.media.s3direct import boto3_available

        if not boto3_available():
            raise ConfigError(
                "LABELWHEEL_S3_DIRECT_BUCKETS needs boto3: pip install boto3 "
                "(or unset it to read cloud images through Label Studio)"
            )
    return buckets, endpoint


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int(name: str, v: dict[str, Any], low: int, high: int) -> int:
    raw = v[name]
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = int(str(raw).strip()) if not isinstance(raw, int) else raw
    except ValueError:
        raise ConfigError(
            f"{name} must be an integer between {low} and {high}, got {raw!r}"
        ) from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be an integer between {low} and {high}, got {value}")
    return value


def _float(name: str, v: dict[str, Any], low: float, high: float) -> float:
    raw = v[name]
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ConfigError(
            f"{name} must be a number between {low} and {high}, got {raw!r}"
        ) from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be a number between {low} and {high}, got {value}")
    return value


def _bool(name: str, v: dict[str, Any]) -> bool:
    raw = v[name]
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")
