from pathlib import Path

from portico_common.settings import *  # noqa: F401,F403
from portico_common.settings import COMMON_APPS, sqlite_database

BASE_DIR = Path(__file__).resolve().parent.parent

ROOT_URLCONF = "live_reading.urls"
WSGI_APPLICATION = "live_reading.wsgi.application"
INSTALLED_APPS = [*COMMON_APPS, "reading"]
DATABASES = sqlite_database("LIVE_READING_DB", BASE_DIR / "db.sqlite3")
