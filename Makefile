# Two commands on a fresh machine: `make setup`, then `make run` or `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
GEN := gen
PROTOS := $(shell find protos -name '*.proto')
# A CPU-only interpreter on a 2-core machine: keep math libraries from oversubscribing the cores.
export OMP_NUM_THREADS ?= 2

.PHONY: setup stubs run test lint format bench migrate doctor tiny-model models settings-docs images clean

setup: $(VENV)/.installed stubs

TORCHAUDIO_SHIM := $(shell find services/tts/torchaudio-stub -name '*.py' -o -name pyproject.toml)

$(VENV)/.installed: pyproject.toml $(TORCHAUDIO_SHIM)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# Qwen3-TTS: an import-only torchaudio (no build matches the CPU torch), then qwen-tts without its declared
	# dependencies (gradio, a CUDA torchaudio); its real ones are pinned in pyproject.toml. See docs/tts-dependencies.md
	$(PY) -m pip install --quiet ./services/tts/torchaudio-stub
	$(PY) -m pip install --quiet --no-deps qwen-tts==0.1.1
	# The generated stubs live outside the source tree (ignored by git): put them on the venv's path.
	echo "$(CURDIR)/$(GEN)" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/voice_generated.pth
	touch $@

stubs: $(VENV)/.installed $(GEN)/.stamp

$(GEN)/.stamp: $(PROTOS)
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(GEN) --pyi_out=$(GEN) --grpc_python_out=$(GEN) $(PROTOS)
	find $(GEN)/voice -type d -exec touch {}/__init__.py \;
	touch $@

# The services and the gateway (127.0.0.1:50051) in front of them, with an internal token made for this run; the
# first start prints an admin API key once and saves it in data/admin-api-key for the CLI (docs/gateway.md).
run: setup
	$(PY) -m voice_common.launcher

test: setup
	# One math thread per process: the tests run servers, moto and torch side by side on two cores, and spinning
	# worker threads fighting over them made a tiny-model generation 20x slower.
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# One mypy run per tree: test folders share module names (conftest), which one run cannot hold.
	$(VENV)/bin/mypy services/common/voice_common services/profiles/voice_profiles services/tts/voice_tts services/asr/voice_asr gateway/voice_gateway client/voice_client cli bench tools voice_testing
	$(VENV)/bin/mypy services/common/tests
	$(VENV)/bin/mypy services/profiles/tests
	$(VENV)/bin/mypy services/tts/tests
	$(VENV)/bin/mypy services/asr/tests
	$(VENV)/bin/mypy gateway/tests
	$(VENV)/bin/mypy client/tests
	$(VENV)/bin/mypy tests

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) -m bench

# A tiny random-weight Qwen3-TTS built with qwen_tts's own classes, for machines without a network (and the tests).
tiny-model: setup
	$(PY) -m tools.tiny_model --output models/tiny-qwen3-tts

# The TTS model into the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub), verified, resumable, for `make run`:
# TTS_MODEL=1.7B (or any hub id) picks another; ASR_MODEL=small (a faster-whisper size or a hub id) adds a Whisper model.
models: setup
	$(VENV)/bin/voice-admin models pull tts $(if $(TTS_MODEL),--model '$(TTS_MODEL)')
	$(if $(ASR_MODEL),$(VENV)/bin/voice-admin models pull asr --model '$(ASR_MODEL)')

migrate: setup
	$(VENV)/bin/voice-admin migrate

doctor: setup
	$(VENV)/bin/voice-admin doctor

# docs/settings.md from the settings classes' descriptions (the tests fail when it is stale).
settings-docs: setup
	$(PY) -m tools.settings_reference

# The four images (docker/*.Dockerfile, the repo as context); VARIANT=cuda for the GPU TTS and ASR images.
IMAGE_TAG ?= dev
VARIANT ?= cpu
images:
	@docker info >/dev/null 2>&1 || { echo "make images: no Docker engine is reachable (docker info failed); the Dockerfiles are checked by tests/test_dockerfiles.py" >&2; exit 1; }
	docker build -f docker/gateway.Dockerfile -t voice-gateway:$(IMAGE_TAG) .
	docker build -f docker/profiles.Dockerfile -t voice-profiles:$(IMAGE_TAG) .
	docker build -f docker/tts.Dockerfile --build-arg VARIANT=$(VARIANT) -t voice-tts:$(IMAGE_TAG)-$(VARIANT) .
	docker build -f docker/asr.Dockerfile --build-arg VARIANT=$(VARIANT) -t voice-asr:$(IMAGE_TAG)-$(VARIANT) .

clean:
	rm -rf $(VENV) $(GEN) .pytest_cache .mypy_cache .ruff_cache
