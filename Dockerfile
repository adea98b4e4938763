# syntax=docker/dockerfile:1
#
# The one gitquorum image: the operator (`gitquorum operator`) and every replica
# (`gitquorum replica`) run from it, each with an explicit command.
#
# Built by the project's own checks: `make image` builds this file unchanged with podman and
# runc (no Docker engine on the development machines) and `make test` runs the image as the
# chart does (tests/image/). Build it with Docker as usual:
#
#   docker build -t ghcr.io/gitquorum/gitquorum:0.1.0 .
#
# Runs as 65532:65532 with a read-only root file system: nothing is written outside /tmp (an
# emptyDir in the chart, also HOME) and the mounted volumes.

# --- build: wheels of gitquorum and of every dependency ---------------------------------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the package is made of: tests, the testbed and the chart stay out of the image.
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --wheel-dir /wheels .

# --- runtime ---------------------------------------------------------------------------------
FROM python:3.11-slim
LABEL org.opencontainers.image.title="gitquorum" \
      org.opencontainers.image.description="Replicated git repositories on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
# git does the pack work of every clone, fetch and push (see docs/architecture.md).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
# Installed from the build stage's wheels only; the bind mount keeps them out of the layers.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels gitquorum
# A passwd entry for 65532: git and Python's getpass look the user up by uid. USER stays
# numeric, so that Kubernetes can check runAsNonRoot.
RUN groupadd --system --gid 65532 gitquorum \
    && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin gitquorum
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["gitquorum"]
