"""Settings, all from the environment (see README "Configuration").

Embedded defaults need nothing set: SQLite under var/ and the Redis that
`config.embedded` starts. DATABASE_URL and REDIS_URL switch to PostgreSQL and an
external Redis.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from config.env import envbool, envint, envlist, envrate, envstr
from steering import redis_keys, redisconn
from steering.privatefiles import read_or_create_secret

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(envstr("STEERING_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = envbool("DEBUG", False)
SECRET_KEY = envstr("SECRET_KEY")
# Without SECRET_KEY a random key of this install's own is made up and kept (0600) under VAR_DIR,
# so commands and tools work; the serving processes (web, worker, beat) then refuse to start
# unless this is a local install (`make run`, `make test`: STEERING_LOCAL_SECRET_KEY=1) or DEBUG
# (steering.startup): a production fleet shares one key that its operators set.
SECRET_KEY_MADE_UP = not SECRET_KEY
if SECRET_KEY_MADE_UP:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    SECRET_KEY = read_or_create_secret(VAR_DIR / "secret-key")
STEERING_LOCAL_SECRET_KEY = envbool("STEERING_LOCAL_SECRET_KEY", False)

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "csp",
    "steering",
]

MIDDLEWARE = [
    "steering.middleware.RequestIdMiddleware",
    "steering.middleware.AccessMiddleware",  # latency for /metrics and the request log, under that id
    "steering.compression.ApiGzipMiddleware",  # API reads in JSON, compressed last (after the ETag below)
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Content-hash ETags and If-None-Match for GET lists and the topology snapshot;
    # object ETags (by revision) are set by the API itself and win.
    "django.middleware.http.ConditionalGetMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "steering" / "templates"],
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

# --- database -------------------------------------------------------------------------
# WAL lets the web process read while a worker writes; the busy timeout makes writers queue
# instead of failing with "database is locked"; IMMEDIATE takes the write lock at BEGIN so a
# read-then-write transaction never deadlocks on the lock upgrade.
SQLITE_OPTIONS = {
    "timeout": 30,
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
}
DATABASE_URL = envstr("DATABASE_URL")
if DATABASE_URL:
    try:
        DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=envint("DB_CONN_MAX_AGE", 60))}
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from exc
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and envbool("DB_POOL", True):
        # Under ASGI a sync view runs on whichever executor thread is free, and a persistent
        # connection (CONN_MAX_AGE) is per thread: idle threads would each keep one open. A pool
        # per process bounds them and hands a connection back at the end of each request.
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = False  # the pool checks connections itself
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": envint("DB_POOL_MIN", 1, minimum=0, maximum=100),
            "max_size": envint("DB_POOL_MAX", 20, minimum=1, maximum=1000),
            "timeout": envint("DB_POOL_TIMEOUT", 30, minimum=1, maximum=300),
        }
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"]["OPTIONS"] = dict(SQLITE_OPTIONS)
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "steering.sqlite3"),
            "OPTIONS": dict(SQLITE_OPTIONS),
            # A file, not :memory:, so tests that use several connections (threads, workers) share it.
            "TEST": {"NAME": str(VAR_DIR / "test-steering.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- redis: broker, channel layer, cache, beat -----------------------------------------
# A Redis URL, or a Sentinel set: sentinel://[:password@]host1:port1,host2:port2/<master-name>/<db>.
# steering.redisconn turns it into every client and into the fragments below; a plain URL is
# used as it is.
REDIS_URL = envstr("REDIS_URL", "redis://127.0.0.1:6379/0")
try:
    redisconn.sentinel_set(REDIS_URL)
except ValueError as exc:
    raise ImproperlyConfigured(f"REDIS_URL is not a Redis or sentinel:// URL: {exc}") from exc

CACHES = {
    "default": {
        **redisconn.cache_settings(REDIS_URL),
        "KEY_PREFIX": redis_keys.CACHE_PREFIX,
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8 reads with a 5 s socket timeout by default, the same as channels-redis' 5 s
        # BZPOPMIN: an idle WebSocket then dies with "Timeout reading" (redis/redis-py#4091).
        # Longer than the blocking pop, still finite so a vanished Redis is noticed.
        # capacity: messages a channel holds before the layer drops new ones (default 100). A burst
        # of versions (a flapping fleet) faster than a busy process reads them must not leave holes
        # that make every browser refetch; memory stays bounded by `expiry` (60 s).
        "CONFIG": {"hosts": [redisconn.channel_layer_host(REDIS_URL, socket_timeout=15)],
                   "prefix": redis_keys.CHANNEL_LAYER_PREFIX, "capacity": 1000},
    }
}

CELERY_BROKER_URL, CELERY_BROKER_TRANSPORT_OPTIONS = redisconn.celery_broker(REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = 60
CELERY_TASK_SOFT_TIME_LIMIT = 50
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Probe shards on their own queue: at fleet scale a dedicated prober worker (`-Q probes`) keeps
# a probe wave from delaying the sweeper's timers; a single worker serves both (`-Q celery,probes`).
# The probe tick needs only Redis (its schedule rebuild from the database may wait): on the probes
# queue it is never stuck behind timers that wait for a database that is away.
CELERY_TASK_ROUTES = {"steering.probe_shard": {"queue": "probes"}, "steering.probe_tick": {"queue": "probes"}}
CELERY_BEAT_SCHEDULE = {
    # Timers live in DB columns; this sweep acts on what is due (ARCHITECTURE.md §4). Twice a second, so
    # a deadline is met within ~0.5 s plus the sweep itself, with room to spare for a loaded worker
    # or one that was just restarted (the durability test holds completions within 2 s).
    "sweep-due-operations": {
        "task": "steering.sweep_due",
        "schedule": 0.5,
        "options": {"expires": 0.5},
    },
    # Health probing (ARCHITECTURE.md §4): the tick claims due backends from Redis and dispatches shards.
    "probe-tick": {
        "task": "steering.probe_tick",
        "schedule": 1.0,
        "options": {"expires": 1.0},
    },
    # Marks stale the backends with no results for 3 intervals; re-decides pools in panic.
    "probe-sweep-stale": {
        "task": "steering.probe_sweep_stale",
        "schedule": 2.0,
        "options": {"expires": 2.0},
    },
    # Outlier ejection (steering.services.outliers): live traffic's verdicts from the data plane's
    # figures, bounded per pool, confirmed or cleared by the prober.
    "outlier-tick": {
        "task": "steering.outlier_tick",
        "schedule": 1.0,
        "options": {"expires": 1.0},
    },
    "purge-idempotency-records": {
        "task": "steering.purge_idempotency_records",
        "schedule": 3600.0,
        "options": {"expires": 3600.0},
    },
}

# Beat: RedBeat's scheduler with its lock in Redis (steering.beat), so however many beats run,
# one sends the schedule above. The one holding the lock renews it at every tick; the others try
# to take it every second (MAX_LOOP_INTERVAL), so a beat that dies without releasing it (SIGKILL,
# a lost host) is replaced within the lock timeout plus a second.
CELERY_BEAT_SCHEDULER = "steering.beat:LockedScheduler"
CELERY_BEAT_MAX_LOOP_INTERVAL = 1
CELERY_REDBEAT_REDIS_URL = REDIS_URL
CELERY_REDBEAT_KEY_PREFIX = redis_keys.REDBEAT_PREFIX
CELERY_REDBEAT_LOCK_KEY = redis_keys.REDBEAT_LOCK
CELERY_REDBEAT_LOCK_TIMEOUT = envint("STEERING_BEAT_LOCK_SECONDS", 10, minimum=2, maximum=300)
CELERY_REDBEAT_REDIS_OPTIONS: dict[str, object] = {}  # unused: steering.beat hands RedBeat its client

# --- auth -----------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# --- HTTPS, session lifetime, Content-Security-Policy -------------------------------------
# STEERING_HTTPS=1 when users reach the product over HTTPS (directly or through a TLS proxy):
# cookies are sent over HTTPS only, browsers are told to use HTTPS for a year (HSTS) and plain
# HTTP is redirected. Behind a proxy that ends TLS, set STEERING_TRUST_X_FORWARDED_PROTO=1 so
# Django believes the proxy's `X-Forwarded-Proto: https` (SECURE_PROXY_SSL_HEADER); the proxy
# must overwrite that header from clients, never pass it through.
STEERING_HTTPS = envbool("STEERING_HTTPS", False)
SESSION_COOKIE_SECURE = STEERING_HTTPS or envbool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
if STEERING_HTTPS:
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", True)
    # Health checks come from the load balancer over plain HTTP inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
if envbool("STEERING_TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# A signed-in session lasts this long from sign-in (a NOC screen signs in once a shift).
SESSION_COOKIE_AGE = envint("STEERING_SESSION_HOURS", 12, minimum=1, maximum=24 * 30) * 3600

# django-csp: everything from this origin only; no inline script anywhere (the dashboard is a
# built bundle, the API docs use the split Swagger view); inline <style> only with the request's
# nonce (the sign-in page). connect-src 'self' covers the live feed's same-origin WebSocket.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "steering.api.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["steering.api.permissions.RolePermission"],
    "DEFAULT_FILTER_BACKENDS": [
        # The usual three (django-filter, ordering, search), applied to lists only.
        "steering.api.filters.ListFilterBackend",
        "steering.api.filters.ListOrderingFilter",
        "steering.api.filters.ListSearchFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "steering.api.pagination.Pagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "steering.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Steering API",
    "DESCRIPTION": "Traffic-steering control plane: topology, drains, weights, audit.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Docs must work with no internet: the Swagger UI assets come from the sidecar package.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {},
    "SECURITY": [{"bearerAuth": []}, {"cookieAuth": []}],
}

# --- steering --------------------------------------------------------------------------
# Networks a backend may live in (probes go nowhere else). Loopback by default.
STEERING_PROBE_ALLOWLIST = envlist("STEERING_PROBE_ALLOWLIST", ["127.0.0.0/8", "::1/128"])
# Where backend names are resolved (steering.resolve reads the same variable): "system" (the
# system resolver, as a fleet needs) or "hosts" (the hosts file only: never a DNS query).
STEERING_RESOLVER = envstr("STEERING_RESOLVER", "system").lower()
if STEERING_RESOLVER not in ("system", "hosts"):
    raise ImproperlyConfigured(f"STEERING_RESOLVER must be system or hosts, not {STEERING_RESOLVER!r}")
STEERING_DEFAULT_GRACE_SECONDS = envint("STEERING_DEFAULT_GRACE_SECONDS", 30, minimum=0)
STEERING_MAX_WAIT_SECONDS = envint("STEERING_MAX_WAIT_SECONDS", 60, minimum=1, maximum=600)
STEERING_IDEMPOTENCY_TTL_SECONDS = envint("STEERING_IDEMPOTENCY_TTL_SECONDS", 86400, minimum=60)
STEERING_TOKEN_DEFAULT_DAYS = envint("STEERING_TOKEN_DEFAULT_DAYS", 90, minimum=1)
# Health probing: backends per shard task, recent samples kept per backend (Redis), and the
# longest the probe schedule may go without a rebuild from the DB.
STEERING_PROBE_SHARD_SIZE = envint("STEERING_PROBE_SHARD_SIZE", 500, minimum=1, maximum=5000)
STEERING_PROBE_SAMPLES = envint("STEERING_PROBE_SAMPLES", 60, minimum=1, maximum=1000)
STEERING_PROBE_RESYNC_SECONDS = envint("STEERING_PROBE_RESYNC_SECONDS", 30, minimum=1, maximum=3600)
# Health reconcile (steering.tasks.probes.reconcile): how often DB health is compared with the
# probe state in Redis and a transition that never reached the DB is repaired (system:reconciler).
STEERING_HEALTH_RECONCILE_SECONDS = envint("STEERING_HEALTH_RECONCILE_SECONDS", 30, minimum=1, maximum=3600)
CELERY_BEAT_SCHEDULE["probe-reconcile"] = {
    "task": "steering.probe_reconcile",
    "schedule": float(STEERING_HEALTH_RECONCILE_SECONDS),
    "options": {"expires": float(STEERING_HEALTH_RECONCILE_SECONDS)},
}
# DNS (GSLB): the remote-backend server PowerDNS asks, and the zone data we answer with.
# Nameserver names for the NS/SOA of each zone we serve (default ns1./ns2.<zone>).
STEERING_GSLB_LISTEN = envstr("STEERING_GSLB_LISTEN", "127.0.0.1:8053")
STEERING_GSLB_NAMESERVERS = envlist("STEERING_GSLB_NAMESERVERS", [])
STEERING_GSLB_HOSTMASTER = envstr("STEERING_GSLB_HOSTMASTER", "")
STEERING_GSLB_ZONE_TTL = envint("STEERING_GSLB_ZONE_TTL", 300, minimum=1, maximum=86400)
# The agent contract: a drain completes only once its PoP's HAProxy acknowledged it
# (STEERING_DATAPLANE_CONFIRM=0 turns that off for a control plane with no data planes, e.g. a
# model-only test bench); without an acknowledgement within the timeout the drain ends
# `unconfirmed`. Agents silent longer than FORGET no longer hold confirmation back.
STEERING_DATAPLANE_CONFIRM = envbool("STEERING_DATAPLANE_CONFIRM", True)
# Maintenance windows (steering.services.windows): how far ahead a start or an end may be, and the
# end the dashboard proposes for a drain or maintenance (an operator can clear or change it).
STEERING_WINDOW_MAX_DAYS = envint("STEERING_WINDOW_MAX_DAYS", 30, minimum=1, maximum=365)
STEERING_UI_DRAIN_EXPIRY_HOURS = envint("STEERING_UI_DRAIN_EXPIRY_HOURS", 72, minimum=0, maximum=24 * 365)
STEERING_DATAPLANE_ACK_TIMEOUT_SECONDS = envint("STEERING_DATAPLANE_ACK_TIMEOUT_SECONDS", 30, minimum=1, maximum=3600)
STEERING_AGENT_FORGET_SECONDS = envint("STEERING_AGENT_FORGET_SECONDS", 600, minimum=10)
# The wait period (AWS ARC's): a person's change to an object is refused within this many seconds
# of the previous person's change to it, so two operators cannot flap it (0 turns it off).
# The system's own changes (timers, the prober, agents' repairs) neither wait nor count.
STEERING_CHANGE_WAIT_SECONDS = envint("STEERING_CHANGE_WAIT_SECONDS", 5, minimum=0, maximum=3600)
# Webhooks (steering.services.webhooks, steering.services.watchers): each POST waits at most
# TIMEOUT seconds; a failed one is tried again after BACKOFF, 2x BACKOFF, 4x... (with jitter, at
# most BACKOFF_MAX apart) until MAX_ATTEMPTS, then it is a dead letter. Health transitions are
# grouped per pool over HEALTH_WINDOW seconds; a data plane is "disconnected" when its agent is
# silent for AGENT_SILENT seconds and "lagging" when a change waits LAG seconds to be applied;
# drift is compared with the fleet file every DRIFT seconds (only while someone subscribes to it).
# Delivered and dead rows older than KEEP_DAYS are purged.
STEERING_WEBHOOK_TIMEOUT_SECONDS = envint("STEERING_WEBHOOK_TIMEOUT_SECONDS", 5, minimum=1, maximum=30)
STEERING_WEBHOOK_MAX_ATTEMPTS = envint("STEERING_WEBHOOK_MAX_ATTEMPTS", 8, minimum=1, maximum=30)
STEERING_WEBHOOK_BACKOFF_SECONDS = envint("STEERING_WEBHOOK_BACKOFF_SECONDS", 10, minimum=1, maximum=3600)
STEERING_WEBHOOK_BACKOFF_MAX_SECONDS = envint("STEERING_WEBHOOK_BACKOFF_MAX_SECONDS", 3600, minimum=1, maximum=86400)
STEERING_WEBHOOK_HEALTH_WINDOW_SECONDS = envint("STEERING_WEBHOOK_HEALTH_WINDOW_SECONDS", 10, minimum=1, maximum=600)
STEERING_WEBHOOK_AGENT_SILENT_SECONDS = envint("STEERING_WEBHOOK_AGENT_SILENT_SECONDS", 60, minimum=5, maximum=86400)
STEERING_WEBHOOK_LAG_SECONDS = envint("STEERING_WEBHOOK_LAG_SECONDS", STEERING_DATAPLANE_ACK_TIMEOUT_SECONDS,
                                      minimum=1, maximum=86400)
STEERING_WEBHOOK_DRIFT_SECONDS = envint("STEERING_WEBHOOK_DRIFT_SECONDS", 60, minimum=5, maximum=86400)
STEERING_WEBHOOK_KEEP_DAYS = envint("STEERING_WEBHOOK_KEEP_DAYS", 14, minimum=1, maximum=3650)
CELERY_BEAT_SCHEDULE.update({
    # Deliveries due (new ones whose enqueue was lost, retries whose backoff ran out).
    "webhook-sweep": {"task": "steering.webhook_sweep", "schedule": 2.0, "options": {"expires": 2.0}},
    # Health transitions grouped per pool, data planes' disconnects and lag (once per transition).
    "notify-watch": {"task": "steering.notify_watch", "schedule": float(STEERING_WEBHOOK_HEALTH_WINDOW_SECONDS),
                     "options": {"expires": float(STEERING_WEBHOOK_HEALTH_WINDOW_SECONDS)}},
    "notify-drift": {"task": "steering.notify_drift", "schedule": float(STEERING_WEBHOOK_DRIFT_SECONDS),
                     "options": {"expires": float(STEERING_WEBHOOK_DRIFT_SECONDS)}},
    "webhook-purge": {"task": "steering.webhook_purge", "schedule": 3600.0, "options": {"expires": 3600.0}},
})
# The demo's pdns_server (runstack) listens on 127.0.0.1 at this port.
STEERING_DNS_PORT = envint("STEERING_DNS_PORT", 5353, minimum=1, maximum=65535)

# --- throttling, sign-in attempts, live-feed limits -------------------------------------
# API requests per identity: an API token, else a signed-in user, else the client address
# (steering.api.throttling). Generous: people, pipelines and the dashboard never meet them, a
# runaway script does. Agents' tokens have their own rate: a report a second and an ACK per
# version per instance. The counts live in the Redis cache (CACHES), shared by every process.
STEERING_THROTTLE_READ = envrate("STEERING_THROTTLE_READ", "1200/min")
STEERING_THROTTLE_WRITE = envrate("STEERING_THROTTLE_WRITE", "120/min")
STEERING_THROTTLE_AGENT = envrate("STEERING_THROTTLE_AGENT", "3000/min")
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = [
    "steering.api.throttling.ReadThrottle",
    "steering.api.throttling.WriteThrottle",
    "steering.api.throttling.AgentThrottle",
]
# Proxies in front that append to X-Forwarded-For (DRF's NUM_PROXIES). 0 trusts only the peer
# address: uvicorn's --proxy-headers already puts the client there for a proxy it trusts.
REST_FRAMEWORK["NUM_PROXIES"] = envint("STEERING_NUM_PROXIES", 0, minimum=0, maximum=10)
# Sign-in (steering.signin): after this many failures for a username, or from a client address,
# within the window, further attempts are refused (429) without checking the password.
STEERING_LOGIN_MAX_FAILURES = envint("STEERING_LOGIN_MAX_FAILURES", 10, minimum=1)
STEERING_LOGIN_WINDOW_SECONDS = envint("STEERING_LOGIN_WINDOW_SECONDS", 900, minimum=1, maximum=86400)
# Live feed (steering.live): open WebSockets per user; the next one is closed with 4429.
STEERING_LIVE_MAX_CONNECTIONS_PER_USER = envint("STEERING_LIVE_MAX_CONNECTIONS_PER_USER", 20, minimum=1)
# Live feed catch-up (steering.readmodels.live_deltas): the last this many versions' deltas stay in
# Redis, so a browser that missed some fetches those, not the whole topology. 0: always refetch.
STEERING_LIVE_CATCHUP_VERSIONS = envint("STEERING_LIVE_CATCHUP_VERSIONS", 2000, minimum=0, maximum=100_000)

# --- static files: the Vite build output is served by Django (whitenoise) ---------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
FRONTEND_DIST = BASE_DIR / "frontend" / "dist"
STATICFILES_DIRS = [FRONTEND_DIST] if FRONTEND_DIST.exists() else []

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# LOG_FORMAT: `plain` (default) or `json`: one JSON object a line with time, level, logger, message
# and the request id the audit records (steering.logs). Under json, uvicorn's and Celery's own lines
# go through the same handler (Celery then leaves the root logger to this configuration).
LOG_FORMAT = envstr("LOG_FORMAT", "plain").strip().lower() or "plain"
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use plain or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "steering.middleware.RequestIdLogFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "steering.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # uvicorn's server lines (not "uvicorn" itself: configuring it would switch on the access
        # log that runstack turns off; steering.request logs requests).
        **({"uvicorn.error": {"handlers": ["console"], "propagate": False}} if LOG_FORMAT == "json" else {}),
        # billiard's pool logger does not propagate: without a handler of its own, a worker process
        # exiting at shutdown was printed as plain text by logging's last-resort handler.
        **({"multiprocessing": {"handlers": ["console"], "propagate": False}} if LOG_FORMAT == "json" else {}),
    },
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
