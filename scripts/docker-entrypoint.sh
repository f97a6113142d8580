#!/usr/bin/env bash
# Entry point of the production image (see Dockerfile). The first argument picks
# the process type:
#
#   web      migrate + setup_schedules (MIGRATE_ON_START=0 skips both), then gunicorn
#            on 0.0.0.0:8000 with WEB_CONCURRENCY workers (default 3); extra gunicorn
#            flags can be given in GUNICORN_CMD_ARGS, which gunicorn reads itself.
#   worker   waits until the database is reachable and fully migrated (at most
#            MIGRATE_WAIT seconds, default 60), then the django-q2 cluster (qcluster).
#   manage.py ARGS...   python manage.py ARGS...  (e.g. manage.py createsuperuser)
#   anything else       exec'd as given (e.g. bash, python manage.py shell).
set -euo pipefail

cd "${APP_DIR:-/app}"

log() { echo "docker-entrypoint: $*" >&2; }

# The portal's own configuration checks (portal.E00x), without the database: a bad
# setting stops the container at once with one line, instead of a retry loop (gunicorn
# would otherwise keep re-spawning workers that exit on it).
check_config() {
  python manage.py check --tag portal_config >/dev/null
}

# Exits non-zero when the database cannot be reached or has unapplied migrations.
migrations_applied() {
  python manage.py migrate --check >/dev/null 2>&1
}

# Waits for the web process (or a one-off `manage.py migrate`) to migrate the
# database, so that a worker never starts against an unmigrated schema.
wait_for_migrations() {
  local wait="${MIGRATE_WAIT:-60}" start=$SECONDS
  until migrations_applied; do
    if (( SECONDS - start >= wait )); then
      log "the database is unreachable or not migrated after ${wait}s; not applied:"
      python manage.py showmigrations --plan 2>&1 | grep -v '^\[X\]' >&2 || true
      return 1
    fi
    log "waiting for the database to be reachable and migrated..."
    sleep 3
  done
}

# Waits for the database to accept connections (it may still be starting when the
# container does); a configuration error is left for migrate to report.
database_reachable() {
  python - >/dev/null 2>&1 <<'PY'
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup()
from django.db import connection

connection.ensure_connection()
PY
}

wait_for_database() {
  local wait="${MIGRATE_WAIT:-60}" start=$SECONDS
  until database_reachable; do
    if (( SECONDS - start >= wait )); then
      log "the database is still unreachable after ${wait}s; trying anyway"
      return 0
    fi
    log "waiting for the database..."
    sleep 3
  done
}

case "${1:-web}" in
  web)
    shift || true
    check_config
    migrate_on_start="${MIGRATE_ON_START:-1}"
    case "${migrate_on_start,,}" in
      0 | false | no | off)
        log "MIGRATE_ON_START=${MIGRATE_ON_START}: skipping migrate and setup_schedules"
        ;;
      *)
        wait_for_database
        python manage.py migrate --noinput
        python manage.py setup_schedules
        ;;
    esac
    # Gunicorn's worker heartbeat files belong in memory, not on the overlay fs.
    tmp_dir=()
    if [[ -d /dev/shm && -w /dev/shm ]]; then
      tmp_dir=(--worker-tmp-dir /dev/shm)
    fi
    exec gunicorn portal.wsgi \
      --bind 0.0.0.0:8000 \
      --workers "${WEB_CONCURRENCY:-3}" \
      --access-logfile - \
      --timeout 60 \
      "${tmp_dir[@]}" \
      "$@"
    ;;
  worker)
    shift
    check_config
    wait_for_migrations
    exec python manage.py qcluster "$@"
    ;;
  manage.py)
    shift
    exec python manage.py "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
