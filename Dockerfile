# syntax=docker/dockerfile:1
# Production image of the Ops Portal.
#
#   docker build -t ops-portal .
#   docker run -e SECRET_KEY=... -e ALLOWED_HOSTS=portal.example.com -p 8000:8000 ops-portal
#
# Process types (scripts/docker-entrypoint.sh): `web` (default: migrate,
# setup_schedules, gunicorn on :8000), `worker` (django-q2 qcluster),
# `manage.py ARGS...`, or any other command, exec'd as given.
# Without DATABASE_URL the data is SQLite in /app/var, a volume.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The unprivileged user every process runs as.
RUN groupadd --system --gid 10001 portal \
 && useradd --system --uid 10001 --gid portal --create-home --home-dir /home/portal \
      --shell /usr/sbin/nologin portal

# Dependencies first, so that a code change does not reinstall them.
WORKDIR /app
COPY requirements.txt ./
RUN python -m venv "$VIRTUAL_ENV" \
 && pip install -r requirements.txt

# The project, owned by root and read-only for the portal user.
COPY . .
RUN chmod 0755 scripts/docker-entrypoint.sh \
 && python -m compileall -q /app

ENV DEBUG=0 \
    VAR_DIR=/app/var \
    STATIC_ROOT=/app/static

# Static files, gathered once at build time and served by whitenoise. The key is a
# throw-away for this step only: SECRET_KEY must be set when the container runs.
RUN mkdir -p /app/var /app/static \
 && SECRET_KEY=collectstatic-build-only-not-a-secret VAR_DIR=/tmp/build-var \
      python manage.py collectstatic --noinput \
 && rm -rf /tmp/build-var \
 && chown portal:portal /app/var \
 && chmod 0750 /app/var

# Default SQLite database (and anything else under VAR_DIR).
VOLUME ["/app/var"]

USER 10001:10001
EXPOSE 8000

# For the web process: /healthz on 127.0.0.1:8000 inside the container, database
# only (the workers have their own check, see docker-compose.yml). The Host header
# is the first name in ALLOWED_HOSTS, else Django would answer 400 to "127.0.0.1".
# urlopen raises on anything but a 2xx, so a 503 or no answer exits 1.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; hosts = [h.strip().lstrip('.') for h in os.environ.get('ALLOWED_HOSTS', '').split(',') if h.strip() not in ('', '*')]; u.urlopen(u.Request('http://127.0.0.1:8000/healthz?checks=database', headers={'Host': (hosts or ['127.0.0.1'])[0]}), timeout=8)"]

ENTRYPOINT ["/app/scripts/docker-entrypoint.sh"]
CMD ["web"]
