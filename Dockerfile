# syntax=docker/dockerfile:1
# One image for every epcsched program: `epcsched extender|autoscaler|exporter|...`.
#
# Build:  docker build -t <registry>/epcsched:<tag> .
# The manifests refer to this image by the logical name `epcsched`; point it at your registry
# with `kustomize edit set image epcsched=<registry>/epcsched:<tag>` (see manifests/README.md).
#
# Both stages must use the same base image: the venv's python is a symlink to the base's
# interpreter. Pin the base by digest in your own builds for reproducibility.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/epcsched
WORKDIR /src
# Every dependency ships manylinux wheels for CPython 3.11 on amd64 and arm64, so no compiler is
# installed here; add build-essential to this stage only if a platform lacks a wheel.
COPY pyproject.toml README.md ./
COPY epcsched ./epcsched
# Optional extras (pyproject.toml [project.optional-dependencies]), comma-separated: `aks` adds
# the Azure SDK that the autoscaler's aks provider needs (manifests/overlays/aks/):
#   docker build --build-arg EXTRAS=aks -t <registry>/epcsched:<tag>-aks .
ARG EXTRAS=""
# `epcsched --help` imports every subcommand: a missing dependency fails the build, not the pod;
# `pip check` fails it on an extra whose requirements conflict with the rest.
RUN /opt/epcsched/bin/pip install . \
    && if [ -n "$EXTRAS" ]; then /opt/epcsched/bin/pip install ".[$EXTRAS]"; fi \
    && /opt/epcsched/bin/pip check \
    && /opt/epcsched/bin/epcsched --help >/dev/null

FROM ${PYTHON_IMAGE}
# A numeric UID/GID so that Kubernetes' runAsNonRoot can verify the user without a passwd lookup.
RUN groupadd --system --gid 65532 epcsched \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin epcsched
COPY --from=build /opt/epcsched /opt/epcsched
# The root filesystem is read-only in the manifests: no bytecode writes, and matplotlib (loaded
# with the simulator's command) keeps its cache under /tmp, which the pods mount as an emptyDir.
ENV PATH=/opt/epcsched/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib
USER 65532:65532
WORKDIR /tmp
# The program is PID 1, for which the kernel ignores a SIGTERM it does not handle: the extender
# (aiohttp's run_app) and the exporter handle it; a program that did not would be killed only at
# the end of the pod's grace period.
# 8888: extender (filter/prioritize/bind, /healthz, /readyz, /metrics); 9877: node exporter;
# 8085: autoscaler (/healthz, /readyz, /metrics).
EXPOSE 8888 8889 9877 8085
ENTRYPOINT ["epcsched"]
CMD ["--help"]
