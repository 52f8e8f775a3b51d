# hemaloop: `make run` installs and starts on the embedded default (SQLite,
# Celery over SQLite, demo data); `make test` installs and runs the whole suite,
# `make test-fast` the quick part for the edit-test loop; `make lint` runs ruff
# and the import contracts (pyproject.toml).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The web app's port: `make run PORT=5001` when 5000 is taken.
PORT ?= 5000

.PHONY: install run test test-fast lint bench clean

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

# No TensorFlow models, PostgreSQL, real workers or browsers: seconds, not minutes.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not postgres and not redis" \
		--ignore=tests/ml --ignore=tests/browser

lint: install
	$(BIN)/ruff check .
	PYTHONPATH=. $(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
