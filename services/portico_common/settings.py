"""Settings shared by every service; each project's settings.py star-imports this."""

import os
from pathlib import Path

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "portico-sample-services-dev-only-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "").lower() in {"1", "true", "yes", "on"}
# The gateway forwards arbitrary Host headers.
ALLOWED_HOSTS = ["*"]

# No admin, sessions or auth app: identity comes only from the X-User-Id header.
COMMON_APPS = ["rest_framework"]

# No CommonMiddleware: its APPEND_SLASH redirect would turn a POST to a slashless
# path into a 500 (DEBUG) or a body-dropping 301. A slashless path is a plain 404.
# Identity headers must carry the gateway's RFC 9421 signature (portico_common/signing.py).
MIDDLEWARE = ["portico_common.signing.GatewaySignatureMiddleware"]
APPEND_SLASH = False

# Keys the gateway may sign with, `id:secret` pairs separated by commas: two
# during a rotation. The default is the demo's key, shared with
# examples/portico.toml and the end-to-end harness; set it anywhere else.
PORTICO_SIGNING_KEYS = os.environ.get("PORTICO_SIGNING_KEYS", "demo:portico-demo-signing-key-change-me-0123456789")
# Headers that say who calls (the gateway's forward_claims and api_client_header).
PORTICO_IDENTITY_HEADERS = [
    name.strip() for name in os.environ.get("PORTICO_IDENTITY_HEADERS", "X-User-Id,X-Api-Client").split(",") if name.strip()
]
# A signature older than this (seconds) is a replay; one further ahead than the skew is refused too.
PORTICO_SIGNATURE_MAX_AGE = int(os.environ.get("PORTICO_SIGNATURE_MAX_AGE", "60"))
PORTICO_SIGNATURE_SKEW = int(os.environ.get("PORTICO_SIGNATURE_SKEW", "5"))

TEMPLATES = []
USE_I18N = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    # The defaults import django.contrib.auth.models, which is not installed.
    "UNAUTHENTICATED_USER": None,
    "UNAUTHENTICATED_TOKEN": None,
    "DEFAULT_PAGINATION_CLASS": "portico_common.pagination.StandardPagination",
    "EXCEPTION_HANDLER": "portico_common.exceptions.exception_handler",
    # RFC 3339 UTC with a 'Z' suffix and whole seconds (TIME_ZONE is UTC).
    "DATETIME_FORMAT": "%Y-%m-%dT%H:%M:%SZ",
    "COERCE_DECIMAL_TO_STRING": True,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # Tracebacks of 500s go to stderr (gunicorn's log), never into responses.
    "loggers": {"django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False}},
}


def sqlite_database(env_var: str, default_path: Path) -> dict:
    """DATABASES for one SQLite file whose path may be overridden by `env_var`."""
    return {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get(env_var) or str(default_path),
            "OPTIONS": {
                # Two gunicorn replicas (or workers) may share one file.
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
