from pathlib import Path

from portico_common.settings import *  # noqa: F401,F403
from portico_common.settings import COMMON_APPS, sqlite_database

BASE_DIR = Path(__file__).resolve().parent.parent

ROOT_URLCONF = "payment.urls"
WSGI_APPLICATION = "payment.wsgi.application"
INSTALLED_APPS = [*COMMON_APPS, "payments"]
DATABASES = sqlite_database("PAYMENT_DB", BASE_DIR / "db.sqlite3")
