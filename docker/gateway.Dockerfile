# syntax=docker/dockerfile:1
# The gateway image (CPU only, the core dependencies). Build from the repository root:
#   docker build -f docker/gateway.Dockerfile -t voice-gateway .
# One folder docker/ for the four images, all built with the repository root as context: one pyproject.toml
# installs every service's code, so each build needs the whole source tree, not a per-service folder.
# tests/test_dockerfiles.py checks this file against the repo (copied paths, entry point, user, ports, extras).

FROM python:3.11.14-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The stub generator lives in its own venv: the image's venv gets only what the service runs.
RUN python3.11 -m venv /opt/protoc && /opt/protoc/bin/pip install grpcio-tools==1.85.1 \
    && python3.11 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml ./
COPY protos/ protos/
COPY services/ services/
COPY gateway/ gateway/
COPY client/ client/
COPY cli/ cli/
# Not editable: the code lands in the venv's site-packages, so the final stage needs only /opt/venv.
RUN /opt/venv/bin/pip install '.'
# The generated stubs inside the venv, put on its path with a .pth file as `make setup` does.
RUN mkdir -p /opt/venv/gen \
    && /opt/protoc/bin/python -m grpc_tools.protoc -Iprotos --python_out=/opt/venv/gen \
        --grpc_python_out=/opt/venv/gen $(find protos -name '*.proto') \
    && find /opt/venv/gen/voice -type d -exec touch {}/__init__.py \; \
    && echo /opt/venv/gen > "$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/voice_generated.pth"

FROM python:3.11.14-slim-bookworm
RUN groupadd --gid 10001 voice && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
    --shell /usr/sbin/nologin voice
COPY --from=builder /opt/venv /opt/venv
# Read-only root filesystem: every scratch path is /tmp (an emptyDir in Kubernetes).
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp TMPDIR=/tmp \
    GATEWAY_HOST=0.0.0.0
USER 10001:10001
# gRPC (GATEWAY_PORT), the OpenAI-compatible HTTP face (GATEWAY_HTTP_PORT) and Prometheus /metrics
# (GATEWAY_METRICS_PORT), the settings' defaults.
EXPOSE 50051 8080 9151
ENTRYPOINT ["python", "-m", "voice_gateway"]
