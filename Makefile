# Bookshelf API. `make run` serves it on http://127.0.0.1:8000; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: run test fuzz bench lint container-test clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required" or 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/flask --app wsgi init-db --demo
	$(BIN)/python wsgi.py

test: $(STAMP)
	$(BIN)/pytest

fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} $(BIN)/pytest -q tests/test_fuzz.py

bench: $(STAMP)
	$(BIN)/python bench/run.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

# Builds the image with podman and checks it running on the PostgreSQL of 127.0.0.1:5432.
container-test: $(STAMP)
	$(PYTHON) deploy/container_test.py

# Brings docker-compose.yml up with podman-compose (a pinned release, which the test installs) and
# checks the start order, the migrations run once, both replicas behind nginx, a replica killed
# and restarted, the data kept across down and up. Stand-in images where no registry answers.
.PHONY: compose-test
compose-test:
	$(PYTHON) deploy/compose_test.py

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache

# The suite through a real PgBouncer (Debian's) running deploy/pgbouncer/pgbouncer.ini in front of
# the PostgreSQL of 127.0.0.1:5432 (database bookshelf_pgbouncer, made afresh); ARGS go to pytest.
.PHONY: test-pgbouncer
test-pgbouncer: $(STAMP)
	$(BIN)/python deploy/pgbouncer/run_tests.py $(ARGS)
