# Bookshelf API. `make run` serves it on http://127.0.0.1:8000; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check
# What is installed comes from the lock files, requirements/*.txt (`make lock` writes them), and
# pip checks every file against its hash there. `make run` installs the runtime alone; `make test`
# adds the dev set.
RUNTIME := $(VENV)/.installed-runtime
STAMP   := $(VENV)/.installed-dev

.PHONY: run test fuzz bench lint lock container-test clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required" or 0)'
	$(PYTHON) -m venv $(VENV)

# The runtime and the build backend, then the project itself (editable, resolving nothing).
$(RUNTIME): requirements/runtime.txt requirements/build.txt pyproject.toml | $(BIN)/python
	$(PIP) --require-hashes --requirement requirements/build.txt --requirement requirements/runtime.txt
	$(PIP) --no-deps --no-build-isolation --editable .
	@touch $@

$(STAMP): $(RUNTIME) requirements/dev.txt
	$(PIP) --require-hashes --requirement requirements/dev.txt
	@touch $@

run: $(RUNTIME)
	$(BIN)/bookshelf init-db --demo
	$(BIN)/bookshelf serve

test: $(STAMP)
	$(BIN)/pytest

# Writes requirements/*.txt from pyproject.toml for Python 3.11 on any platform, with the hashes
# of every file of each version. A version already locked stays while pyproject allows it;
# `make lock LOCK_ARGS=--upgrade` takes the newest everywhere. dev.txt keeps runtime.txt's versions.
LOCK := $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" $(LOCK_ARGS)
lock: $(STAMP)
	$(LOCK) pyproject.toml --output-file requirements/runtime.txt
	$(LOCK) pyproject.toml --extra dev --constraint requirements/runtime.txt \
		--output-file requirements/dev.txt
	$(BIN)/python -c 'import tomllib; \
		print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
		| $(LOCK) - --output-file requirements/build.txt

fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} $(BIN)/pytest -q tests/test_fuzz.py

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The list at 10,000, 100,000 and 1,000,000 books (BENCH_SCALE_SIZES), SQLite and, with
# BENCH_DATABASE_URL, PostgreSQL: bench/results/scale.md (bench/scale.py).
.PHONY: bench-scale
bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile
	$(BIN)/python clients/lint/run.py
	$(BIN)/python requirements/common-passwords/build.py --check

# A TypeScript client generated from the served document (openapi-typescript + openapi-fetch,
# pinned by clients/typescript/package-lock.json), checked by tsc --strict, run against a live server.
.PHONY: client-test
client-test: $(STAMP)
	$(BIN)/python clients/typescript/run.py

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
