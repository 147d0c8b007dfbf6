# syntax=docker/dockerfile:1
# crypto-service image: the service and the crypto-poll client, non-root, ready for a
# read-only root filesystem (metrics and temp files go to /tmp, a tmpfs or emptyDir).

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY client ./client
# A wheel-only install into a venv that the final stage copies whole.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir /src \
    && mkdir /data

FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.title="crypto-service" \
      org.opencontainers.image.description="Simulated crypto price API made to be polled" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /opt/venv /opt/venv
# No PYTHONUNBUFFERED: the service flushes its own output (warnings and errors at once,
# request lines every LOG_FLUSH_SECONDS); unbuffered, every request line would cost a
# system call and a GIL hand-off.
# The price history's embedded SQLite file lives on /data: a volume (a PersistentVolume,
# or PostgreSQL through DATABASE_URL instead when there are replicas).
COPY --from=build --chown=10001:10001 /data /data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/crypto-service-metrics \
    DATABASE_URL=sqlite:////data/prices.sqlite3
VOLUME ["/data"]
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:5000/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["crypto-service"]
