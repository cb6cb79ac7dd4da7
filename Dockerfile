# syntax=docker/dockerfile:1
# fastmetrics: a drop-in replacement for metrics-server (deploy/ has the manifests and chart).
#
#   docker build -t fastmetrics:dev .
#
# Every RUN step calls deploy/image/build.sh, which also runs without Docker (the same two
# commands, tested by tests/test_packaging.py):
#   deploy/image/build.sh wheels . /tmp/wheels && deploy/image/build.sh install /tmp/wheels /opt/fastmetrics

ARG PYTHON_VERSION=3.11

# ---- builder: a compiler, the build requirements, the wheels --------------------------------
FROM python:${PYTHON_VERSION} AS builder
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
COPY deploy/image/build.sh /usr/local/bin/fastmetrics-build
RUN fastmetrics-build wheels /src /wheels

# ---- runtime: slim Python, the wheels installed into a venv, nothing else -------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="fastmetrics" \
      org.opencontainers.image.description="A drop-in replacement for Kubernetes metrics-server with a compiled core: same flags, same metrics.k8s.io API, same manifests" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:${PYTHON_VERSION}-slim"
# the wheels and the script are mounted for this step only: no layer keeps them, no compiler
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,from=builder,source=/usr/local/bin/fastmetrics-build,target=/usr/local/bin/fastmetrics-build \
    fastmetrics-build install /wheels /opt/fastmetrics
ENV PATH=/opt/fastmetrics/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# the manifests mount an emptyDir at /tmp and pass --cert-dir=/tmp: with readOnlyRootFilesystem
# that is the only place written to (the self-signed serving certificate)
WORKDIR /tmp
# nobody; the manifests run it as 1000 (runAsUser), as metrics-server's
USER 65534:65534
EXPOSE 10250
ENTRYPOINT ["fastmetrics"]
