#!/usr/bin/env bash
# Quick start: virtualenv, install, migrate, demo data and logins, then the web
# server and the django-q2 cluster together (Ctrl-C stops both).
# Usage: scripts/run.sh [host:port]     (what `make run` runs)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ADDR="${1:-127.0.0.1:8000}"
# Demo defaults (override in the environment): the demo pipeline is a local git
# repository, and POST /api/request and the fleet's BPMS endpoints (POST /fleet/task,
# GET /fleet/task/<id>) are open like the original runner's and fleet manager's.
export PIPELINE_GIT_SCHEMES="${PIPELINE_GIT_SCHEMES:-https,ssh,git,file}"
export PIPELINE_OPEN_REQUEST="${PIPELINE_OPEN_REQUEST:-1}"
export FLEET_OPEN_BPMS="${FLEET_OPEN_BPMS:-1}"
# The original Affirmative clients' endpoints (/affirmative/...) are open too.
export AFFIRMATIONS_OPEN_COMPAT="${AFFIRMATIONS_OPEN_COMPAT:-1}"
# Links in emails and the demo's hints point at where this server listens.
export SITE_URL="${SITE_URL:-http://$ADDR}"
ensure_venv requirements.txt
step "migrate";          "$PY" manage.py migrate --noinput
step "setup_schedules";  "$PY" manage.py setup_schedules
step "seed_demo";        "$PY" manage.py seed_demo
echo
echo "   Open http://$ADDR/admin/ and log in with one of the logins above."
echo
exec "$PY" manage.py run_portal --addr "$ADDR"
