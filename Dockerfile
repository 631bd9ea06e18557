# cas: content-addressed, deduplicating storage server (S3 API, WebDAV, web UI).
#
#   docker build -t cas .
#   docker run -p 9000:9000 -p 8080:8080 -v cas-data:/data \
#     -e CAS_ROOT_USER=admin -e CAS_ROOT_PASSWORD=change-me-please cas
#
# Without CAS_ROOT_USER/CAS_ROOT_PASSWORD the first start generates root credentials, prints them
# once and keeps them in /data/root-credentials (0600). Inside the container the listeners bind
# 0.0.0.0 so that published ports reach them; outside, the default stays 127.0.0.1.

# ---- build: wheels of cas and its dependencies (compilers stay in this stage) ----
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cas ./cas
RUN python -m venv /opt/cas \
 && /opt/cas/bin/pip install --no-cache-dir .

# ---- runtime: the virtualenv only, run as an unprivileged user ----
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="cas" \
      org.opencontainers.image.description="Content-addressed, deduplicating storage server: S3 API, WebDAV, web UI" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/cas/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CAS_DATA=/data
RUN groupadd --system --gid 10001 cas \
 && useradd --system --uid 10001 --gid cas --home-dir /data --no-create-home --shell /usr/sbin/nologin cas \
 && mkdir -p /data \
 && chown cas:cas /data \
 && chmod 0700 /data
COPY --from=build /opt/cas /opt/cas
USER 10001:10001
WORKDIR /data
VOLUME /data
EXPOSE 9000 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["cas"]
CMD ["serve", "--data", "/data", "--s3", "0.0.0.0:9000", "--http", "0.0.0.0:8080"]
