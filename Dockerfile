# syntax=docker/dockerfile:1
#
# One image per Orgdir service, from the uv workspace:
#
#   docker build --build-arg SERVICE=orgunits      -t orgdir/orgunits .
#   docker build --build-arg SERVICE=registry      -t orgdir/registry .
#   docker build --build-arg SERVICE=access-rights -t orgdir/access-rights .
#   docker build --build-arg SERVICE=notifier      -t orgdir/notifier .
#   docker build --build-arg SERVICE=portal        -t orgdir/portal .
#
# SERVICE is the workspace member under services/ (also its package name); its
# import name is the same with "-" replaced by "_". The final image holds only
# the Python runtime and a virtual environment with the service, the shared
# `orgdir` package and their dependencies: no uv, no compiler, no sources of
# the other services, and no development tooling (the workspace member tools/,
# `orgdir-tools`: stack CLI, local servers, demo data, pytest plugin, test kit;
# only its pyproject.toml is copied, so that the workspace matches uv.lock; the
# build fails if orgdir_tools, pytest or standardwebhooks got in). It runs as
# UID 10001 and works on a read-only root filesystem (bytecode is compiled at
# build time; mount a writable /tmp).
# The Helm chart in deploy/helm/orgdir runs the same uvicorn command itself.
# No auth or key configuration is baked in: started without ORGDIR_AUTH_MODE (and,
# outside static mode, the keys) a service refuses to start and names what to set.
# Static tokens are never enabled here (ORGDIR_ALLOW_STATIC_TOKENS is not set).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<orgunits|registry|access-rights|notifier>" >&2; exit 1; }
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first (cached while only the sources change).
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/pyproject.toml
COPY services/orgunits/pyproject.toml services/orgunits/pyproject.toml
COPY services/registry/pyproject.toml services/registry/pyproject.toml
COPY services/access-rights/pyproject.toml services/access-rights/pyproject.toml
COPY services/notifier/pyproject.toml services/notifier/pyproject.toml
COPY services/portal/pyproject.toml services/portal/pyproject.toml
COPY tools/pyproject.toml tools/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package "${SERVICE}"
# Then the workspace packages, installed as wheels (not editable) so that the
# final stage needs nothing from /src.
COPY shared/ shared/
COPY services/ services/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "${SERVICE}"
RUN module="$(printf '%s' "${SERVICE}" | tr '-' '_')" \
 && test -f "services/${SERVICE}/${module}/app.py" \
 && printf '#!/bin/sh\nexec uvicorn --factory %s.app:create_app --host 0.0.0.0 --port "${PORT:-8000}" "$@"\n' "${module}" > /app/serve \
 && chmod 0555 /app/serve \
 && /app/.venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec(sys.argv[1]) is None)" "${module}" \
 && /app/.venv/bin/python -c "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) for m in sys.argv[1:]))" \
        orgdir_tools pytest standardwebhooks

FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="orgdir-${SERVICE}" \
      org.opencontainers.image.description="Orgdir ${SERVICE} service"
RUN groupadd --system --gid 10001 orgdir \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin orgdir
COPY --from=build --chown=root:root /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    ORGDIR_SERVICE_NAME=${SERVICE}
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
CMD ["/app/serve"]
