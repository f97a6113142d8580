"""Ops Portal settings: one file, every value from the environment.

Every variable read here is listed, with a comment, in ``.env.example``. With no
environment at all the portal runs on its embedded defaults: SQLite under ``var/``,
django-q2's ORM broker, console email. Invalid values do not raise here; they are
collected in ``CONFIG_ERRORS`` and reported by the ``portal.E00x`` system checks.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import dj_database_url

from portal.lib.env import Env
from portal.ticks import crontab_entries

BASE_DIR = Path(__file__).resolve().parent.parent
env = Env()

# --- Core -------------------------------------------------------------------
DEBUG = env.bool("DEBUG", True)
SITE_URL = env.str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
VAR_DIR = Path(env.str("VAR_DIR", str(BASE_DIR / "var")))
_secret = env.str("SECRET_KEY")
SECRET_KEY_MISSING = not _secret


def _dev_secret_key(path: Path) -> str:
    """A development key shared by every process of this checkout (web, workers):
    django-q2 signs its packages with it, so a per-process key would break them."""
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("insecure-dev-" + secrets.token_urlsafe(40))
            path.chmod(0o600)
        return path.read_text().strip()
    except OSError:
        return "insecure-dev-" + secrets.token_urlsafe(40)


# Only a DEBUG instance may run without SECRET_KEY; portal.E002 stops the others.
if _secret:
    SECRET_KEY = _secret
elif DEBUG:
    SECRET_KEY = _dev_secret_key(VAR_DIR / "dev-secret-key")
else:
    SECRET_KEY = "unset-" + secrets.token_urlsafe(40)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "portal.apps.PortalAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "django_crontab",
    "portal.apps.PortalConfig",
    "packages_app",
    "fleet",
    "affirmations",
    "importers",
]

MIDDLEWARE = [
    # Views marked @fast_lane (agents' polls and results, the affirmations' store)
    # skip the browser-oriented middleware below.
    "portal.middleware.FastLane",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
    {
        # Plain-text email bodies and subjects: the same templates, no HTML escaping.
        "NAME": "text",
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {"autoescape": False},
    },
]

# --- Database ---------------------------------------------------------------
# SQLite is tuned for a web process and workers writing at once: WAL lets readers
# run beside the writer, busy_timeout waits instead of failing with "database is
# locked", and IMMEDIATE transactions take the write lock up front so a
# read-then-write transaction cannot deadlock on lock upgrade.
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": (
        "PRAGMA journal_mode=WAL;"
        "PRAGMA synchronous=NORMAL;"
        "PRAGMA busy_timeout=20000;"
        "PRAGMA foreign_keys=ON;"
    ),
}
DEFAULT_DATABASE_URL = f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"
DATABASE_URL = env.str("DATABASE_URL", DEFAULT_DATABASE_URL)
try:
    _database = dj_database_url.parse(DATABASE_URL, conn_max_age=0)
except (ValueError, KeyError) as exc:
    env.error("DATABASE_URL", f"cannot be parsed ({exc})")
    _database = None
if _database is not None and _database["ENGINE"] not in (
    "django.db.backends.sqlite3",
    "django.db.backends.postgresql",
    "django.db.backends.postgresql_psycopg2",
):
    env.error("DATABASE_URL", "only postgres:// and sqlite:/// URLs are supported")
    _database = None
if _database is None:
    # A stand-in so that Django starts far enough to report the error.
    _database = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
if _database["ENGINE"] == "django.db.backends.sqlite3":
    _database["OPTIONS"] = {**SQLITE_OPTIONS, **_database.get("OPTIONS", {})}
    # Tests use a file (WAL), not shared-cache memory, whose table locks would make
    # a worker thread and the test's own queries refuse each other.
    _database["TEST"] = {"NAME": str(VAR_DIR / "test-portal.sqlite3")}
    if DATABASE_URL == DEFAULT_DATABASE_URL:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
else:
    _database["ENGINE"] = "django.db.backends.postgresql"
    _database["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", 60, min_value=0)
    # A reused connection is checked (one SELECT 1) at each request's first query,
    # so a restarted PostgreSQL costs no failed request. Off saves that round trip
    # on busy endpoints (agent polls), at the price of one error after a restart.
    _database["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", True)
    _database.setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, broker and background work ---------------------------------------
REDIS_URL = env.str("REDIS_URL")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    env.error(
        "REDIS_URL", f"{REDIS_URL!r} must start with redis://, rediss:// or unix://"
    )
    REDIS_URL = ""
# The cache is shared by every process: django-q2 keeps its cluster heartbeats in
# it, so a per-process memory cache would hide the workers from /healthz.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "portal",
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "portal_cache",
        }
    }

Q_TIMEOUT = env.int("Q_TIMEOUT", 6 * 3600, min_value=1)
Q_RETRY = env.int("Q_RETRY", Q_TIMEOUT + 600, min_value=1)
Q_CLUSTER = {
    "name": "portal",
    "label": "Background tasks",
    "workers": env.int("Q_WORKERS", 2, min_value=1, max_value=64),
    # Analytics packages run for hours: a task may use up to Q_TIMEOUT seconds;
    # the broker hands an unacknowledged message out again only after Q_RETRY,
    # which must be longer (portal.E003), and never more than once.
    "timeout": Q_TIMEOUT,
    "retry": Q_RETRY,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": env.int("Q_SAVE_LIMIT", 1000, min_value=0),
    "recycle": 200,
    "poll": 0.5,
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
# Days of django-q2 task results (successes and failures) kept by the prune tick.
TASK_HISTORY_DAYS = env.int("TASK_HISTORY_DAYS", 30, min_value=1)
# Seconds without a cluster heartbeat before /healthz reports the workers down.
HEALTH_HEARTBEAT_MAX_AGE = env.int("HEALTH_HEARTBEAT_MAX_AGE", 60, min_value=1)

# Periodic jobs: portal/ticks.py is the one list; setup_schedules upserts it into
# django-q2, and `manage.py crontab add` installs the same list for system cron.
CRONJOBS = crontab_entries()
CRONTAB_DJANGO_MANAGE_PATH = str(BASE_DIR / "manage.py")
CRONTAB_LOCK_JOBS = True
CRONTAB_COMMENT = "ops-portal"

# --- Packages -----------------------------------------------------------------
# Run logs (one folder per run) and the packages' virtualenvs.
PACKAGES_RUNS_DIR = Path(env.str("PACKAGES_RUNS_DIR", str(VAR_DIR / "runs")))
PACKAGES_ENVS_DIR = Path(env.str("PACKAGES_ENVS_DIR", str(VAR_DIR / "envs")))
# Seconds between SIGTERM and SIGKILL when a run times out or is cancelled.
PACKAGES_KILL_GRACE = env.int("PACKAGES_KILL_GRACE", 5, min_value=0, max_value=600)
# A running run writes a heartbeat this often; without one for PACKAGES_LOST_AFTER
# seconds the reconciler marks it lost.
PACKAGES_HEARTBEAT = env.int("PACKAGES_HEARTBEAT", 2, min_value=1)
PACKAGES_LOST_AFTER = env.int("PACKAGES_LOST_AFTER", 60, min_value=5)
# Repeated failures of one package within this many seconds send one email.
PACKAGES_NOTIFY_WINDOW = env.int("PACKAGES_NOTIFY_WINDOW", 3600, min_value=0)

# --- Pipelines (FX Quants runner) -------------------------------------------------
# docker: steps in containers through the docker SDK (DOCKER_HOST picks the engine);
# local: each script line as a subprocess in the workspace; auto: docker when the
# engine answers, otherwise local (said in the run's log).
PIPELINE_EXECUTOR = env.str("PIPELINE_EXECUTOR", "auto")
if PIPELINE_EXECUTOR not in ("docker", "local", "auto"):
    env.error("PIPELINE_EXECUTOR", "must be docker, local or auto")
# Clones and step workspaces (one folder per run, deleted when the run ends).
PIPELINE_WORKSPACES_DIR = Path(
    env.str("PIPELINE_WORKSPACES_DIR", str(VAR_DIR / "pipelines"))
)
# URL schemes a pipeline may be cloned from; add "file" to allow local paths.
PIPELINE_GIT_SCHEMES = env.list("PIPELINE_GIT_SCHEMES", ["https", "ssh", "git"])
PIPELINE_CLONE_TIMEOUT = env.int("PIPELINE_CLONE_TIMEOUT", 120, min_value=1)
PIPELINE_CLONE_MAX_BYTES = env.int(
    "PIPELINE_CLONE_MAX_BYTES", 200 * 1024 * 1024, min_value=1024
)
# A pipeline's time limit when its file sets none (seconds).
PIPELINE_TIMEOUT = env.int("PIPELINE_TIMEOUT", 3600, min_value=1)
# Output kept per command; beyond it the output is cut and marked.
PIPELINE_MAX_OUTPUT_BYTES = env.int(
    "PIPELINE_MAX_OUTPUT_BYTES", 1024 * 1024, min_value=1024
)
# Pull a step's image when it is not on the engine (off: the image must exist).
PIPELINE_PULL_IMAGES = env.bool("PIPELINE_PULL_IMAGES", False)
# Let a step ask for `network: host` (otherwise steps have no network at all).
PIPELINE_ALLOW_HOST_NETWORK = env.bool("PIPELINE_ALLOW_HOST_NETWORK", False)
# POST /api/request without an API key (the original had no auth; on in the demo).
PIPELINE_OPEN_REQUEST = env.bool("PIPELINE_OPEN_REQUEST", False)
# The original's callback URLs; a request's own URLs take precedence.
PIPELINE_CALLBACK_URL = env.str("PIPELINE_CALLBACK_URL")
STEP_CALLBACK_URL = env.str("STEP_CALLBACK_URL")
CMD_CALLBACK_URL = env.str("CMD_CALLBACK_URL")
# Each callback POST: timeout (seconds) and retries after the first attempt.
PIPELINE_CALLBACK_TIMEOUT = env.int("PIPELINE_CALLBACK_TIMEOUT", 5, min_value=1)
PIPELINE_CALLBACK_RETRIES = env.int(
    "PIPELINE_CALLBACK_RETRIES", 2, min_value=0, max_value=10
)

# --- Fleet (SLAMon agent fleet manager) -----------------------------------------
# Seconds an agent waits before its next poll (sent to it as return_time).
AGENT_RETURN_TIME = env.int("FLEET_AGENT_RETURN_TIME", 60, min_value=1)
# Seconds without a poll before an agent is lost (its claimed tasks are requeued
# while attempts remain, else failed) and before it is dropped (hidden, kept).
AGENT_ACTIVE_THRESHOLD = env.int("FLEET_AGENT_ACTIVE_THRESHOLD", 300, min_value=1)
AGENT_DROP_THRESHOLD = env.int("FLEET_AGENT_DROP_THRESHOLD", 3600, min_value=1)
if AGENT_DROP_THRESHOLD < AGENT_ACTIVE_THRESHOLD:
    env.error(
        "FLEET_AGENT_DROP_THRESHOLD",
        "must not be below FLEET_AGENT_ACTIVE_THRESHOLD",
    )
# Also run the cleanup (cheaply, at most every few seconds) on agent polls.
AUTO_CLEANUP = env.bool("FLEET_AUTO_CLEANUP", True)
# Refuse polls and results without a valid agent token (off: the original had none).
FLEET_REQUIRE_TOKEN = env.bool("FLEET_REQUIRE_TOKEN", False)
# POST/GET /fleet/task without an API key (the original had no auth; on in the demo).
FLEET_OPEN_BPMS = env.bool("FLEET_OPEN_BPMS", False)
# Defaults of new tasks: claims allowed (a lost agent's task is handed out again
# while attempts remain), execution timeout and TTL in seconds (0: none).
FLEET_TASK_MAX_ATTEMPTS = env.int("FLEET_TASK_MAX_ATTEMPTS", 2, min_value=1)
FLEET_TASK_TIMEOUT = env.int("FLEET_TASK_TIMEOUT", 3600, min_value=0)
FLEET_TASK_TTL = env.int("FLEET_TASK_TTL", 0, min_value=0)

# --- Affirmations (Affirmative) ---------------------------------------------------
# A client's event time within this many seconds of the server's is kept as the
# time the event happened; further off, the server's time is used (and noted).
AFFIRMATIONS_MAX_CLOCK_SKEW = env.int("AFFIRMATIONS_MAX_CLOCK_SKEW", 300, min_value=0)
# Days affirmations and evaluations are kept (deleted in batches by a daily tick).
AFFIRMATIONS_RETENTION_DAYS = env.int("AFFIRMATIONS_RETENTION_DAYS", 90, min_value=1)
AFFIRMATIONS_EVALUATION_RETENTION_DAYS = env.int(
    "AFFIRMATIONS_EVALUATION_RETENTION_DAYS", 400, min_value=1
)
# The original clients' endpoints (/affirmative/...) without an API key (demo: on).
AFFIRMATIONS_OPEN_COMPAT = env.bool("AFFIRMATIONS_OPEN_COMPAT", False)

# --- Importers (REST APIs -> Graphite) ---------------------------------------------
# A source's run lock older than this many minutes is taken over (its process died).
IMPORTERS_LOCK_STALE_MINUTES = env.int(
    "IMPORTERS_LOCK_STALE_MINUTES", 60, min_value=1, max_value=7 * 24 * 60
)
# Seconds each HTTP call to an API may take (connect and each read).
IMPORTERS_HTTP_TIMEOUT = env.int(
    "IMPORTERS_HTTP_TIMEOUT", 10, min_value=1, max_value=300
)
# Extra source kinds: dotted paths to importers.sources.Kind objects (a plugin, or
# the tests' fake kinds in child processes), added to the built-in ones.
IMPORTERS_EXTRA_KINDS = env.list("IMPORTERS_EXTRA_KINDS")
# Environment variables import sources may name as credentials: only these
# prefixes, so that no source can send the portal's own secrets to an API.
IMPORTERS_CREDENTIAL_PREFIXES = env.list(
    "IMPORTERS_CREDENTIAL_PREFIXES", ["APTELIGENT_", "PINGDOM_", "IMPORTER_"]
)
# Seconds a dry run from the admin may fetch (it runs in the web request).
IMPORTERS_DRY_RUN_SECONDS = env.int(
    "IMPORTERS_DRY_RUN_SECONDS", 20, min_value=1, max_value=600
)
# Days import runs are kept (deleted in batches by a daily tick; each source's last
# run stays).
IMPORTERS_RUN_RETENTION_DAYS = env.int("IMPORTERS_RUN_RETENTION_DAYS", 30, min_value=1)

# --- Email ------------------------------------------------------------------
EMAIL_HOST = env.str("EMAIL_HOST")
EMAIL_PORT = env.int("EMAIL_PORT", 587, min_value=1, max_value=65535)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", True)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", 15, min_value=1)
if EMAIL_USE_TLS and EMAIL_USE_SSL and env.is_set("EMAIL_USE_SSL"):
    env.error("EMAIL_USE_SSL", "EMAIL_USE_TLS and EMAIL_USE_SSL are mutually exclusive")
if EMAIL_USE_SSL:
    EMAIL_USE_TLS = False
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", "Ops Portal <ops-portal@localhost>")
SERVER_EMAIL = env.str("SERVER_EMAIL", DEFAULT_FROM_EMAIL)
EMAIL_SUBJECT_PREFIX = "[Ops Portal] "

# --- Auth, sessions, security -----------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "admin:login"
SECURE_COOKIES = env.bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
if env.bool("TRUST_PROXY_HEADERS", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- I18N, time -------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files -----------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", str(VAR_DIR / "static")))
try:  # whitenoise warns on every start when the directory is missing
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
except OSError:
    pass
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- API --------------------------------------------------------------------
# Seconds a process reuses an API key it looked up (0: query every request); a
# revoked key or changed scopes apply within this time in the other processes.
API_KEY_CACHE_SECONDS = env.int("API_KEY_CACHE_SECONDS", 10, min_value=0)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.api.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["portal.api.PortalPermission"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "portal.api.exception_handler",
    # DRF's three, with a JSON parser that also refuses lone surrogate escapes.
    "DEFAULT_PARSER_CLASSES": [
        "portal.api.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Ops Portal API",
    "DESCRIPTION": (
        "Run packages and pipelines, manage the agent fleet, affirm events and "
        "drive importers. Authenticate with an admin session or an API key sent "
        "as `Authorization: Token <key>` or `X-Api-Key: <key>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and Swagger UI are public; every operation in them is not.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Status-like fields of different apps share names; name their enums apart.
    "ENUM_NAME_OVERRIDES": {
        "PackageRunStatusEnum": "packages_app.models.PackageRun.Status",
        "PackageRunTriggerEnum": "packages_app.models.PackageRun.Trigger",
        "PackageConcurrencyEnum": "packages_app.models.Package.Concurrency",
        "PipelineStatusEnum": "packages_app.models.PipelineStatus",
        "PipelineRunTriggerEnum": "packages_app.models.PipelineRun.Trigger",
        "TaskStateEnum": "fleet.models.Task.State",
        "AgentStateEnum": "fleet.models.Agent.State",
        "CheckStatusEnum": "affirmations.models.Check.Status",
        "AffirmationSourceEnum": "affirmations.models.Affirmation.Source",
    },
}

# --- Logging ----------------------------------------------------------------
LOG_LEVEL = env.choice(
    "LOG_LEVEL", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "filters": {
        # Agent tokens can travel in URL paths; Django logs paths of 4xx responses.
        "redact_url_secrets": {"()": "portal.lib.logredact.RedactUrlSecrets"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django.request": {
            "handlers": ["console"],
            "level": LOG_LEVEL,
            "propagate": False,
            "filters": ["redact_url_secrets"],
        },
        "django.server": {
            "handlers": ["console"],
            "level": LOG_LEVEL,
            "propagate": False,
            "filters": ["redact_url_secrets"],
        },
        "django_q": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}

# Read by portal.checks: every value above that could not be used as given.
CONFIG_ERRORS = list(env.errors)
