import os
import sys
from pathlib import Path

from django.core.wsgi import get_wsgi_application

# The shared `portico_common` package lives in services/, next to this project.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent.parent))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "live_reading.settings")

application = get_wsgi_application()
