# Set-up and the two everyday jobs. Every target builds the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel: a plain `torch` would pull a multi-GB CUDA build on CPU-only machines.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: quickstart test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,plots]"
	touch $@

# The main job: prepare the bundled corpus, train the fast CPU recipe, translate and score.
quickstart: venv
	$(BIN)/nmt-bert pipeline --recipe recipes/fast-cpu.yaml --out runs/fast-cpu

test: venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
