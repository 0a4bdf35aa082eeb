#!/bin/sh
# The services image's entry point: `container-entrypoint SERVICE`. Migrates
# the service's database, seeds it when it did not exist yet, then runs
# gunicorn on the service's port from services/README.md (PORT overrides it;
# SERVICES_DIR, the folder holding the projects, runs it outside the image).
set -eu

service="${1:-}"
case "$service" in
    student_api) port=8001 database="$STUDENT_API_DB" ;;
    live_reading) port=8002 database="$LIVE_READING_DB" ;;
    payment) port=8003 database="$PAYMENT_DB" ;;
    *)
        echo "usage: container-entrypoint student_api|live_reading|payment (got '$service')" >&2
        exit 64
        ;;
esac

cd "${SERVICES_DIR:-/srv/services}/$service"
existed=false
[ -e "$database" ] && existed=true
python manage.py migrate --noinput --verbosity 0
if [ "$existed" = false ]; then
    python manage.py seed
fi

# The heartbeat file of gunicorn's workers goes to memory, as the root file
# system may be read-only; there is one gunicorn per container, so no control socket.
exec gunicorn "$service.wsgi:application" \
    --bind "0.0.0.0:${PORT:-$port}" \
    --workers "${WORKERS:-2}" \
    --worker-tmp-dir /dev/shm \
    --access-logfile - \
    --no-control-socket
