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
MIDDLEWARE = []
APPEND_SLASH = False

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
