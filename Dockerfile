# ccrotate in a container: `docker compose up` (compose.yaml) or see docs/containers.md.
# Pinned to a patch release; pin the digest too (python:3.12.8-slim-bookworm@sha256:…)
# once you have pulled it, so rebuilds are reproducible.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# --- build: a venv with ccrotate[server], no compilers or caches carried over --------
FROM ${PYTHON_IMAGE} AS build
# More extras for replicas: --build-arg CCROTATE_EXTRAS=server,postgres,redis
ARG CCROTATE_EXTRAS=server
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/ccrotate \
 && /opt/ccrotate/bin/pip install ".[${CCROTATE_EXTRAS}]"

# --- runtime: the venv, a non-root user, the accounts volume -------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 ccrotate \
 && useradd --system --uid 10001 --gid ccrotate --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin ccrotate \
 && mkdir /data && chown ccrotate:ccrotate /data && chmod 0700 /data
COPY --from=build /opt/ccrotate /opt/ccrotate
COPY docker/healthcheck.py /opt/ccrotate/healthcheck.py
# The accounts file lives on the /data volume; ccrotate writes it 0600 (token refreshes
# rewrite it in place), and the directory is the user's alone.
ENV PATH=/opt/ccrotate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/data \
    CCROTATE_ACCOUNTS_PATH=/data/accounts.json \
    CCROTATE_HOST=0.0.0.0 \
    CCROTATE_PORT=8080
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "/opt/ccrotate/healthcheck.py"]
ENTRYPOINT ["ccrotate"]
# Listening on 0.0.0.0 needs a client token: pass CCROTATE_AUTH_TOKEN (16+ characters).
CMD ["serve"]
