import os
from pathlib import Path

from portico_common.settings import *  # noqa: F401,F403
from portico_common.settings import COMMON_APPS, sqlite_database

BASE_DIR = Path(__file__).resolve().parent.parent

ROOT_URLCONF = "student_api.urls"
WSGI_APPLICATION = "student_api.wsgi.application"
INSTALLED_APPS = [*COMMON_APPS, "users"]
DATABASES = sqlite_database("STUDENT_API_DB", BASE_DIR / "db.sqlite3")

# Uploaded avatars (POST /users/{id}/avatar/) live here; the service serves
# them back itself at GET /users/{id}/avatar/.
MEDIA_ROOT = os.environ.get("STUDENT_API_MEDIA") or str(BASE_DIR / "media")
MEDIA_URL = "/media/"
# Largest avatar accepted; larger uploads get 413.
AVATAR_MAX_BYTES = 2 * 1024 * 1024
# Uploads above this are spooled to a temporary file by Django, not kept in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024
