#!/usr/bin/env python
import os
import sys
from pathlib import Path

# The shared `portico_common` package lives one level up, in services/.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "live_reading.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
