# hemaloop: `make run` installs and starts on the embedded default (SQLite,
# Celery over SQLite, demo data); `make test` installs and runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The web app's port: `make run PORT=5001` when 5000 is taken.
PORT ?= 5000

.PHONY: install run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[cpu,test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/hemaloop migrate
	$(BIN)/hemaloop bootstrap --demo
	$(BIN)/hemaloop run --port $(PORT)

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
