#!/usr/bin/env bash
# Create services/.venv, install the pins, then migrate and seed every service.
# Idempotent: safe to run again (seeding wipes and recreates the sample data).
# DB paths follow STUDENT_API_DB / LIVE_READING_DB / PAYMENT_DB when set.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt

for service in student_api live_reading payment; do
    (cd "$service" && ../.venv/bin/python manage.py migrate --noinput && ../.venv/bin/python manage.py seed)
done
