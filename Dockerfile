# segsync hosted mode: `segsync serve` (scheduler + consent webhooks + /healthz + /metrics).
#   docker build -t segsync:0.1.0 .
# Run it with compose.yaml (PostgreSQL + Caddy for TLS); see README.md, "Deploying".
# The base is pinned to an exact Python release; to pin the bytes too, append its digest
# (docker buildx imagetools inspect python:3.12.8-slim-bookworm) as FROM ...@sha256:<digest>.

FROM python:3.12.8-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY connectors ./connectors
COPY consent ./consent
COPY scoring ./scoring
COPY sync ./sync
COPY sandbox ./sandbox
# A virtualenv, so the runtime stage copies one self-contained folder and no build tools.
RUN python -m venv /opt/segsync && /opt/segsync/bin/pip install --no-cache-dir /src

FROM python:3.12.8-slim-bookworm
ENV PATH=/opt/segsync/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# A fixed, unprivileged uid: volumes and secret files can be owned by it on the host.
RUN groupadd --system --gid 10001 segsync \
 && useradd --system --no-log-init --uid 10001 --gid segsync --home-dir /var/lib/segsync --create-home segsync
COPY --from=build /opt/segsync /opt/segsync
USER 10001:10001
WORKDIR /var/lib/segsync
EXPOSE 8080
# 503 (store down or scheduler stopped) and no answer both fail the check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["segsync"]
CMD ["serve", "/etc/segsync/config.yaml", "--listen", "0.0.0.0:8080"]
