# Application image for every orchestrator process: the ingester (`orchestrator ingest`), the
# Celery workers, beat and Flower (`celery -A tasks ...`) and the one-shot jobs
# (`orchestrator db upgrade`, `orchestrator topics create`). docker-compose.yml picks the command
# and defines the health checks.

# ---- build stage: install the project and its runtime dependencies into a virtualenv ----------
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY . /src
# Runtime dependencies only: no [test], [embedded] or [bench] extras in the image.
RUN pip install /src

# ---- runtime stage: the virtualenv and an unprivileged user, no source tree, no build cache ----
FROM python:3.11.14-slim-bookworm

LABEL org.opencontainers.image.title="genesis-orchestrator" \
      org.opencontainers.image.description="Event orchestrator for Genesis sessions"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 orchestrator \
    && useradd --system --uid 10001 --gid orchestrator --create-home \
       --home-dir /home/orchestrator --shell /usr/sbin/nologin orchestrator

COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /home/orchestrator

CMD ["orchestrator", "--help"]
