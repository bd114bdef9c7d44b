# syntax=docker/dockerfile:1
# The TTS image (extra `tts`: Qwen3-TTS on torch). From the repository root:
#   docker build -f docker/tts.Dockerfile --build-arg VARIANT=cuda -t voice-tts:cuda .   (or VARIANT=cpu)
# Layout, stub generation and user as in gateway.Dockerfile. No weights inside: TTS_MODEL names a hub id found in
# HF_HUB_CACHE (/models, a volume filled by `voice-admin models pull tts`) or a directory on that volume.
#
# VARIANT=cpu: python slim; torch 2.13.0 from PyTorch's CPU index (PyPI's Linux torch is the CUDA build: GBs).
# VARIANT=cuda: nvidia/cuda 12.8 with cuDNN 9 (what the ASR image's CTranslate2 needs too: one base for both) and
# Python 3.11 from the deadsnakes PPA (Ubuntu 22.04's own python3.11 is a 3.11.0 release candidate); torch 2.13.0
# from the cu128 index, which brings its own CUDA libraries as nvidia-* wheels. torchaudio stays the in-repo stub in
# both: no torchaudio build matches torch 2.13 and the 12 Hz path never calls it (docs/tts-dependencies.md).
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
ARG TORCH_VERSION=2.13.0
ARG CUDA_TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3.11 -m venv /opt/protoc && /opt/protoc/bin/pip install grpcio-tools==1.85.1 \
    && python3.11 -m venv /opt/venv
# torch first, from the variant's index; the project's `torch==2.13.0` is then already met (2.13.0+cpu or +cu128).
RUN case "$VARIANT" in \
        cpu) torch_index=https://download.pytorch.org/whl/cpu ;; \
        cuda) torch_index="$CUDA_TORCH_INDEX" ;; \
        *) echo "VARIANT must be cpu or cuda, not '$VARIANT'" >&2; exit 1 ;; \
    esac \
    && /opt/venv/bin/pip install --index-url "$torch_index" "torch==$TORCH_VERSION"
WORKDIR /src
COPY pyproject.toml ./
COPY protos/ protos/
COPY services/ services/
COPY gateway/ gateway/
COPY client/ client/
COPY cli/ cli/
# The order of `make setup`: the project with its extra, the import-only torchaudio, qwen-tts without its deps.
RUN /opt/venv/bin/pip install '.[tts]' \
    && /opt/venv/bin/pip install ./services/tts/torchaudio-stub \
    && /opt/venv/bin/pip install --no-deps qwen-tts==0.1.1
RUN mkdir -p /opt/venv/gen \
    && /opt/protoc/bin/python -m grpc_tools.protoc -Iprotos --python_out=/opt/venv/gen \
        --grpc_python_out=/opt/venv/gen $(find protos -name '*.proto') \
    && find /opt/venv/gen/voice -type d -exec touch {}/__init__.py \; \
    && echo /opt/venv/gen > "$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/voice_generated.pth"

FROM base-${VARIANT}
RUN groupadd --gid 10001 voice && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
    --shell /usr/sbin/nologin voice
COPY --from=builder /opt/venv /opt/venv
# Read-only root filesystem: scratch (and librosa's numba cache) in /tmp, an emptyDir; models from the /models volume.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp TMPDIR=/tmp \
    NUMBA_CACHE_DIR=/tmp/numba HF_HUB_CACHE=/models TTS_HOST=0.0.0.0
VOLUME ["/models"]
USER 10001:10001
# gRPC (TTS_PORT) and Prometheus /metrics (TTS_METRICS_PORT), the settings' defaults.
EXPOSE 50053 9153
ENTRYPOINT ["python", "-m", "voice_tts"]
