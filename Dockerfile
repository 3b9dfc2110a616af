# ordergate gateway image.
#   docker build -t ordergate .
#   docker run -p 8000:8000 -e REDIS_URL=... -e DATABASE_URL=... ordergate
# Without REDIS_URL / DATABASE_URL the app falls back to its embedded Redis and a SQLite file
# in /app/data, which is fine for a demo and wrong for production.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# builder: resolve and install everything into a self-contained venv at /opt/venv.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, from pyproject alone, so editing app code does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(deps))" > requirements.txt \
 && pip install -r requirements.txt

# Then the package itself (a regular, non-editable install: the runtime has no source tree).
COPY app ./app
RUN pip install --no-deps .

# ---------------------------------------------------------------------------------------------
# runtime: the venv, the migrations, the example configs; nothing else.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORDERGATE_MIGRATIONS_DIR=/app/migrations \
    ORDERGATE_DATA_DIR=/app/data

# Fixed ids so volume ownership is predictable across rebuilds and hosts.
RUN groupadd --system --gid 10001 ordergate \
 && useradd --system --uid 10001 --gid ordergate --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin ordergate

WORKDIR /app

COPY --from=builder /opt/venv /opt/venv
# Code and migrations stay root-owned (read-only to the app); only the data dir is writable.
COPY alembic.ini ./
COPY migrations ./migrations
COPY config ./config
RUN mkdir -p /app/data && chown ordergate:ordergate /app/data

USER ordergate

EXPOSE 8000

# Liveness only (/healthz); readiness (/readyz) depends on Redis/DB/broker and belongs to the
# orchestrator, not to a restart decision. slim has no curl, so use the stdlib.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]

# Bring the schema up to date, then replace the shell with the server so it gets signals.
CMD ["sh", "-c", "ordergate migrate && exec ordergate serve --host 0.0.0.0 --port 8000"]
