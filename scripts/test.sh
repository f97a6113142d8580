#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then runs
# ruff, Django's checks, the migrations check and pytest on SQLite, and on
# PostgreSQL too when DATABASE_URL points at a reachable one.
# Usage: scripts/test.sh [extra pytest args]     (what `make test` runs)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_venv requirements-dev.txt
ensure_debian_packages chromium chromium-driver

# The pipeline tests run real containers through podman's Docker-compatible API.
# As root, set podman up (idempotent); otherwise those tests skip, loudly.
if [[ $(id -u) -eq 0 ]]; then
  step "container engine (scripts/setup-containers.sh)"
  if out=$(scripts/setup-containers.sh); then
    export "${out##*$'\n'}"   # DOCKER_HOST=unix://...
    echo "   $DOCKER_HOST"
  else
    echo "!! scripts/setup-containers.sh failed: the container tests will be skipped" >&2
  fi
else
  echo "!! not root: podman cannot be set up here; the container tests will be skipped" >&2
fi

step "ruff check";          "$VENV/bin/ruff" check .
step "ruff format --check"; "$VENV/bin/ruff" format --check .

PG_URL="${DATABASE_URL:-}"
# The SQLite leg uses a throw-away database so it never touches var/portal.sqlite3.
SQLITE_DIR="$(mktemp -d)"
trap 'rm -rf "$SQLITE_DIR"' EXIT
export VAR_DIR="$SQLITE_DIR"

step "manage.py check (SQLite)"
env -u DATABASE_URL "$PY" manage.py check --fail-level WARNING
step "makemigrations --check"
env -u DATABASE_URL "$PY" manage.py makemigrations --check --dry-run

PYTEST=("$PY" -m pytest -n "${PYTEST_WORKERS:-auto}" --dist loadgroup -p no:cacheprovider)

step "pytest on SQLite"
env -u DATABASE_URL "${PYTEST[@]}" "$@"

if [[ "$PG_URL" == postgres* ]]; then
  if "$PY" - "$PG_URL" <<'PY'
import sys, psycopg2
try:
    psycopg2.connect(sys.argv[1], connect_timeout=3).close()
except Exception as exc:
    print(f"PostgreSQL at DATABASE_URL is not reachable: {exc}".strip())
    sys.exit(1)
PY
  then
    step "manage.py check (PostgreSQL)"
    DATABASE_URL="$PG_URL" "$PY" manage.py check --fail-level WARNING
    step "pytest on PostgreSQL"
    DATABASE_URL="$PG_URL" "${PYTEST[@]}" "$@"
  else
    echo "!! DATABASE_URL is set but PostgreSQL cannot be reached: PostgreSQL leg failed" >&2
    exit 1
  fi
else
  echo "== DATABASE_URL does not point at PostgreSQL: PostgreSQL leg skipped"
fi
echo "== all checks passed"
