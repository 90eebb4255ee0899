"""Stagewise settings. Every value comes from the environment, with safe defaults for the
embedded one-machine mode (see README "Configuration")."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import environ

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
STAGEWISE_EMBEDDED = not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"))

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
if not _database_url or not _redis_url:
    from webapp.embedded import ensure_postgres, ensure_redis

    try:
        _database_url = _database_url or ensure_postgres(STAGEWISE_DATA_DIR)
        _redis_url = _redis_url or ensure_redis(STAGEWISE_DATA_DIR)
    except EmbeddedError as exc:
        sys.stderr.write(f"stagewise: {exc}\n")
        raise SystemExit(2) from None
    # Child processes (web server, workers) attach to the same servers.
    os.environ["DATABASE_URL"] = _database_url
    os.environ["REDIS_URL"] = _redis_url

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
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "runs",
    "frontend",
]

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
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# ------------------------------------------------------------------ security
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool(
    "SESSION_COOKIE_SECURE", default=not DEBUG and not STAGEWISE_EMBEDDED
)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# ------------------------------------------------------------------ REST API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "runs.api.parsers.OrjsonParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "runs.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Stagewise API",
    "DESCRIPTION": "Staged training pipelines, runs, metrics and analysis.",
    "VERSION": "0.1.0",
    "ENUM_NAME_OVERRIDES": {
        "RunStateEnum": "runs.models.runs.RunState",
        "StageStateEnum": "runs.models.runs.StageState",
    },
}

# ------------------------------------------------------------------ Channels + Celery
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
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
    "sync-queue-consumers": {
        "task": "runs.tasks.sync_queue_consumers",
        "schedule": 30.0,
        "options": {"expires": 60},
    },
}

# Metric ingest commits asynchronously unless this is set (see runs/services/ingest.py).
STAGEWISE_INGEST_SYNC_COMMIT = env.bool("STAGEWISE_INGEST_SYNC_COMMIT", default=False)

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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING")},
}
