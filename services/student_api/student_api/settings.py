from pathlib import Path

from portico_common.settings import *  # noqa: F401,F403
from portico_common.settings import COMMON_APPS, sqlite_database

BASE_DIR = Path(__file__).resolve().parent.parent

ROOT_URLCONF = "student_api.urls"
WSGI_APPLICATION = "student_api.wsgi.application"
INSTALLED_APPS = [*COMMON_APPS, "users"]
DATABASES = sqlite_database("STUDENT_API_DB", BASE_DIR / "db.sqlite3")
