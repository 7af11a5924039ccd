# ray-ft-webhook: a venv built in one stage, copied alone into a clean stage of the same base.
#
# BASE must give python3 (>= 3.11) with venv at the same path in both stages. Production default:
# the official slim image. Where no registry can be reached (CI, see hack/image.sh) a Debian bookworm
# image made by debootstrap is passed instead: --build-arg BASE=localhost/bookworm-base --pull=never.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# `python3 -m venv` works with both bases (/usr/local/bin/python3 in python:*, /usr/bin/python3 in Debian).
RUN python3 -m venv /opt/venv
WORKDIR /src
# The dependencies first, in a layer of their own that a code change does not invalidate: pip resolves
# them from pyproject.toml with an empty package (and README) standing in for the project, which then
# leaves again. Wheels only: there is no compiler in either stage.
COPY pyproject.toml ./
RUN mkdir webhook && touch webhook/__init__.py README.md \
    && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: . \
    && /opt/venv/bin/pip uninstall --no-cache-dir -y ray-ft-webhook \
    && rm -r webhook README.md
COPY README.md ./
COPY webhook ./webhook
# The project itself, non-editable. Then what the webhook never runs leaves the venv: pip and
# setuptools (nothing installs at run time). The import check fails the build should a module need a
# package that is not there (the `kubernetes` package is not: the webhook has its own small client).
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/pip uninstall --no-cache-dir -y pip setuptools \
    && rm -f /opt/venv/bin/activate* /opt/venv/bin/Activate.ps1 \
    && /opt/venv/bin/python -c "import webhook.cli.main, webhook.common.kube, webhook.admission.watch, webhook.cli.serve, webhook.certs.sync, webhook.cli.check"

FROM ${BASE}
# serve's defaults for the image live in the environment, not in CMD: a RAY_FT_WEBHOOK_* variable given to the
# container (or a flag after the image name) overrides them, as it does outside the image.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RAY_FT_WEBHOOK_PORT=8443 \
    RAY_FT_WEBHOOK_TLS_CERT=/etc/ray-ft-webhook/tls/tls.crt \
    RAY_FT_WEBHOOK_TLS_KEY=/etc/ray-ft-webhook/tls/tls.key
COPY --from=build /opt/venv /opt/venv
# Numeric, so Kubernetes' runAsNonRoot can verify it without an /etc/passwd entry (distroless "nonroot").
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/opt/venv/bin/ray-ft-webhook"]
CMD ["serve"]
