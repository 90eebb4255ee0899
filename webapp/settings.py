"""Stagewise settings. Every value comes from the environment, with safe defaults for the
embedded one-machine mode (see README "Configuration")."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import environ
from redis.exceptions import ConnectionError as RedisConnectionError

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
# Unset: a per-installation key generated into the data dir (never in the repo).
SECRET_KEY = env.str("SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Under pytest the default data dir is a separate one, so tests never touch a dev install.
_default_data_dir = BASE_DIR / (".stagewise/test" if "pytest" in sys.modules else ".stagewise")
STAGEWISE_DATA_DIR = Path(env.str("STAGEWISE_DATA_DIR", default=str(_default_data_dir)))
STAGEWISE_DATA_DIR = STAGEWISE_DATA_DIR.resolve()
# Embedded mode (PostgreSQL and Redis started under the data dir) is decided once, by the first
# process, which finds no DATABASE_URL/REDIS_URL. It sets both URLs for its children below and
# STAGEWISE_EMBEDDED=true with them, so a child (web server, worker, a shell) reads the same
# mode instead of taking the inherited URLs for a deployment's.
STAGEWISE_EMBEDDED = env.bool("STAGEWISE_EMBEDDED", default=False) or not (
    os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")
)

from webapp.embedded import EmbeddedError, check_data_dir  # noqa: E402

try:
    check_data_dir(STAGEWISE_DATA_DIR)
except EmbeddedError as exc:
    sys.stderr.write(f"stagewise: {exc}\n")
    raise SystemExit(2) from None

if not SECRET_KEY:
    from webapp.secret import installation_secret

    SECRET_KEY = installation_secret(STAGEWISE_DATA_DIR)

# ------------------------------------------------------------------ services
_database_url = os.environ.get("DATABASE_URL")
_redis_url = os.environ.get("REDIS_URL")
# The embedded servers this process started or attached to because their URL was unset: the
# ones `manage.py up` watches and stops (children inherit the URLs and own none).
STAGEWISE_EMBEDDED_SERVERS: list[str] = []
if not _database_url or not _redis_url:
    from webapp.embedded import ensure_postgres, ensure_redis

    try:
        if not _database_url:
            _database_url = ensure_postgres(STAGEWISE_DATA_DIR)
            STAGEWISE_EMBEDDED_SERVERS.append("postgres")
        if not _redis_url:
            _redis_url = ensure_redis(STAGEWISE_DATA_DIR)
            STAGEWISE_EMBEDDED_SERVERS.append("redis")
    except EmbeddedError as exc:
        sys.stderr.write(f"stagewise: {exc}\n")
        raise SystemExit(2) from None
    # Child processes (web server, workers) attach to the same servers, in the same mode.
    os.environ["DATABASE_URL"] = _database_url
    os.environ["REDIS_URL"] = _redis_url
    os.environ["STAGEWISE_EMBEDDED"] = "true"

DATABASE_URL = _database_url
REDIS_URL = _redis_url
DATABASES = {"default": env.db_url_config(DATABASE_URL)}
if not DATABASES["default"]["ENGINE"].endswith("postgresql"):
    raise environ.ImproperlyConfigured("DATABASE_URL must point at PostgreSQL")
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# ------------------------------------------------------------------ apps
INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "runs",
    "frontend",
]
INSTALLED_APPS += ["drf_spectacular_sidecar"]  # Swagger UI / Redoc assets, served locally

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = STAGEWISE_DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise expects it; collectstatic fills it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = STAGEWISE_DATA_DIR / "uploads"
# Shared storage (runs/storage.py). Unset: checkpoints and uploads live under the data dir
# only. An fsspec URL (s3://bucket/prefix, gs://..., /mnt/nfs/stagewise): the store of record
# that workers on other machines read and write; STAGEWISE_STORAGE_OPTIONS is a JSON object of
# the filesystem's keyword arguments (s3fs: endpoint_url, key, secret; or AWS_* variables).
STAGEWISE_STORAGE_URL = env.str("STAGEWISE_STORAGE_URL", default="")
STAGEWISE_STORAGE_OPTIONS = env.str("STAGEWISE_STORAGE_OPTIONS", default="")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# ------------------------------------------------------------------ security
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
BEHIND_TLS_PROXY = env.bool("BEHIND_TLS_PROXY", default=False)
# Whether browsers reach the site over HTTPS (directly or through a TLS proxy). Cookies are
# Secure only then: over plain http a browser drops a Secure cookie, and every login fails its
# CSRF check. Declared, never guessed from the process's mode, so all processes agree and
# `check --deploy` warns about insecure cookies exactly when they are insecure.
STAGEWISE_HTTPS = env.bool("STAGEWISE_HTTPS", default=SECURE_SSL_REDIRECT or BEHIND_TLS_PROXY)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=STAGEWISE_HTTPS)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=SESSION_COOKIE_SECURE)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# ------------------------------------------------------------------ REST API
REST_FRAMEWORK = {
    # Token first: its authenticate_header makes an anonymous call a 401 with WWW-Authenticate
    # (DRF asks only the first class). Session requests keep DRF's CSRF check.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "runs.api.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Per token (per user for sessions), counted in the Redis cache below: a 429 with
    # Retry-After over the rate. Metric batches have their own, higher rate (runs/api/throttling.py).
    "DEFAULT_THROTTLE_CLASSES": [
        "runs.api.throttling.ApiUserThrottle",
        "runs.api.throttling.IngestThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env.str("STAGEWISE_THROTTLE_USER", default="2000/min"),
        "ingest": env.str("STAGEWISE_THROTTLE_INGEST", default="20000/min"),
    },
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "runs.api.parsers.OrjsonParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    # limit/offset out of range or not integers are a 400, not DRF's silent default
    "DEFAULT_PAGINATION_CLASS": "runs.api.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "runs.api.errors.exception_handler",
}
# JSON bodies over this are a 413, refused from their Content-Length before they are read
# (runs/api/parsers.py): a 50,000-point metric batch is about 4.6 MB (keys up to 200
# characters: about 14 MB). Dataset uploads have their own limit, STAGEWISE_MAX_UPLOAD_BYTES.
STAGEWISE_MAX_BODY_BYTES = env.int("STAGEWISE_MAX_BODY_BYTES", default=16 * 1024 * 1024)
STAGEWISE_MAX_UPLOAD_BYTES = env.int("STAGEWISE_MAX_UPLOAD_BYTES", default=200 * 1024 * 1024)
# JSON bodies nested deeper than this are a 400 (plan validators recurse).
STAGEWISE_MAX_JSON_DEPTH = env.int("STAGEWISE_MAX_JSON_DEPTH", default=64)
# Before any view: a query parameter with NUL is a 400, an /api/ body over the limit a 413.
MIDDLEWARE = [*MIDDLEWARE, "runs.middleware.request_guard", "runs.middleware.DatabaseOutage"]


def _redis_db_url(url: str, db: int) -> str:
    """REDIS_URL on database ``db``: ``unix:///path.sock?db=0`` or ``redis://host:port/0``."""
    if url.startswith("unix://"):
        path, _, query = url.partition("?")
        params = [p for p in query.split("&") if p and not p.startswith("db=")]
        return f"{path}?{'&'.join([*params, f'db={db}'])}"
    head, sep, query = url.partition("?")
    scheme, _, rest = head.partition("://")
    hostport = rest.split("/", 1)[0]
    return f"{scheme}://{hostport}/{db}{sep}{query}"


# Shared by all web processes (API throttle counters, short-lived page caches); its own Redis
# database so that flushing it never touches Celery's or Channels' keys (database 0).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": _redis_db_url(REDIS_URL, env.int("STAGEWISE_CACHE_REDIS_DB", default=1)),
        "KEY_PREFIX": "stagewise",
    }
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Stagewise API",
    "DESCRIPTION": "Staged training pipelines, runs, metrics, datasets and analysis. "
    "Authenticate with a personal API token (`Authorization: Bearer <key>`, from "
    "/settings/tokens/) or a signed-in session. Errors are JSON: "
    '`{"detail": ..., "errors": {field: [reasons]}}`. Lists are paginated with `limit` and '
    "`offset`. An optional query parameter sent empty is the same as one left out. Strings "
    "must not contain NUL characters. Queues, workers and data roots are managed by staff in "
    "the Django admin (/admin/).",
    "VERSION": "0.1.0",
    # pydantic writes the plan's schema (trainers.plan.plan_schema) in JSON Schema 2020-12
    "OAS_VERSION": "3.1.0",
    "ENUM_NAME_OVERRIDES": {
        "RunStateEnum": "runs.models.runs.RunState",
        "StageStateEnum": "runs.models.runs.StageState",
        "DatasetFormatEnum": "runs.models.datasets.DatasetFormat",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "runs.api.schema.add_plan_components",
        "runs.api.schema.json_request_bodies",
        "runs.api.schema.empty_query_values",
        "runs.api.schema.add_error_responses",
    ],
    # The schema and the docs are for signed-in users and token holders (anonymous: 401).
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# ------------------------------------------------------------------ Channels + Celery
# Every idle websocket waits in a blocking pop of channels-redis (RedisChannelLayer.brpop_timeout,
# 5 s) whose reply comes only when that timeout ends; redis-py's default read timeout is also
# 5 s, so idle reads raced it and lost ("Timeout reading from redis.sock"): the socket closed
# and the page reconnected every ~5 s. Reads must outlast the pop; connecting stays quick.
CHANNEL_REDIS_SOCKET_TIMEOUT = 30
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": REDIS_URL,
                    "socket_timeout": CHANNEL_REDIS_SOCKET_TIMEOUT,
                    "socket_connect_timeout": 5,
                    # After Redis restarts, the pool's idle connections are dead: retry a
                    # command once on a new one instead of failing the first group_add or
                    # push of every process (a page's reconnect then waited a backoff step).
                    "retry_on_error": [RedisConnectionError],
                }
            ],
            # Sized so live pushes are not dropped under the benchmark load (DESIGN.md).
            "capacity": env.int("CHANNEL_CAPACITY", default=5000),
            "expiry": 60,
        },
    }
}

from webapp.embedded import celery_broker_url  # noqa: E402

CELERY_BROKER_URL = celery_broker_url(REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
# Ack after the task: a busy worker then prefetches nothing, so idle workers get new stages.
# Redelivery after the visibility timeout is harmless: the Postgres lease decides who runs.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The scheduler's tasks go to a queue of their own, consumed by a control worker
# (`celery -A webapp worker -Q stagewise-control --concurrency 1 -P solo -n control@%h`, which
# `manage.py up` starts), so they never wait behind a training stage on a training queue.
# No training queue may take this name (Queue.clean); stages go to their run's queue.
STAGEWISE_CONTROL_QUEUE = env.str("STAGEWISE_CONTROL_QUEUE", default="stagewise-control")
STAGEWISE_CONTROL_TASKS = (
    "runs.tasks.requeue_expired",
    "runs.tasks.dispatch_runs",
    "runs.tasks.sync_queue_consumers",
    "runs.tasks.workers_mark_lost",
)
CELERY_TASK_ROUTES = {name: {"queue": STAGEWISE_CONTROL_QUEUE} for name in STAGEWISE_CONTROL_TASKS}
# A tick not run within `expires` seconds is dropped (a later one does the same work), so a
# control worker that was away does not replay every missed tick when it comes back.
CELERY_BEAT_SCHEDULE = {
    "requeue-expired-leases": {
        "task": "runs.tasks.requeue_expired",
        "schedule": 5.0,
        "options": {"expires": 30},
    },
    "dispatch": {"task": "runs.tasks.dispatch_runs", "schedule": 5.0, "options": {"expires": 30}},
    "mark-lost-workers": {
        "task": "runs.tasks.workers_mark_lost",
        "schedule": 15.0,
        "options": {"expires": 30},
    },
    "sync-queue-consumers": {
        "task": "runs.tasks.sync_queue_consumers",
        "schedule": 30.0,
        "options": {"expires": 60},
    },
}

# Metric ingest commits asynchronously unless this is set (see runs/services/ingest.py).
STAGEWISE_INGEST_SYNC_COMMIT = env.bool("STAGEWISE_INGEST_SYNC_COMMIT", default=False)

# Worker registry (runs/execution/registry.py): seconds between a worker's heartbeats, and
# of silence after which the scheduler marks it lost.
STAGEWISE_WORKER_HEARTBEAT_SECONDS = env.float("STAGEWISE_WORKER_HEARTBEAT_SECONDS", default=10.0)
STAGEWISE_WORKER_LOST_SECONDS = env.float("STAGEWISE_WORKER_LOST_SECONDS", default=45.0)
# Worker leases (seconds); tests shorten these.
STAGEWISE_LEASE_SECONDS = env.int("STAGEWISE_LEASE_SECONDS", default=60)
STAGEWISE_HEARTBEAT_SECONDS = env.float("STAGEWISE_HEARTBEAT_SECONDS", default=10.0)
# An external run (trained elsewhere) with no report for this long is marked stale in the UI.
STAGEWISE_EXTERNAL_STALE_SECONDS = env.int("STAGEWISE_EXTERNAL_STALE_SECONDS", default=600)

# Plan limits (trainers.plan.PlanLimits): a plan over them is a 400 naming the field, so one
# request cannot ask a worker (or the web process) for an absurd allocation. README lists them.
STAGEWISE_PLAN_LIMITS = {
    "max_stages": env.int("STAGEWISE_MAX_STAGES", default=64),
    "max_stage_steps": env.int("STAGEWISE_MAX_STAGE_STEPS", default=10_000_000),
    "max_total_steps": env.int("STAGEWISE_MAX_TOTAL_STEPS", default=100_000_000),
    "max_batch_size": env.int("STAGEWISE_MAX_BATCH_SIZE", default=65_536),
    "max_seq_len": env.int("STAGEWISE_MAX_SEQ_LEN", default=131_072),
    "max_eval_sets": env.int("STAGEWISE_MAX_EVAL_SETS", default=64),
    "max_sources": env.int("STAGEWISE_MAX_SOURCES", default=64),
    "max_plan_bytes": env.int("STAGEWISE_MAX_PLAN_BYTES", default=1_000_000),
}

# STAGEWISE_LOG_FORMAT=json: one JSON object per line, with the run and stage a worker is
# executing (webapp/log_context.py) — for log shippers. Default: plain text.
STAGEWISE_LOG_FORMAT = env.str("STAGEWISE_LOG_FORMAT", default="text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "webapp.log_context.ContextFilter"}},
    "formatters": {
        "text": {"format": "%(levelname)s %(name)s: %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["context"],
            "formatter": "json" if STAGEWISE_LOG_FORMAT == "json" else "text",
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING")},
}
# /metrics: scrapers send this as a bearer token; unset, a staff account is needed
STAGEWISE_METRICS_TOKEN = env.str("STAGEWISE_METRICS_TOKEN", default="")
