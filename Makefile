# saga-coordinator — developer commands. `make demo` runs the main job, `make test` the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export SAGA_CACHE_DIR ?= $(HOME)/.cache/saga-coordinator

.PHONY: install node-participant test unit integration chaos lint format schemas demo bench bench-full bench-longrun bench-deps kafka-up kafka-down postgres-up clean

$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11+"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/.installed

## Everything: venv, install, PostgreSQL, Kafka (started and stopped by the test fixtures), all tests.
test: install postgres-up node-participant
	$(BIN)/python -m infra.kafka jars
	$(BIN)/pytest tests

## The Node.js participant example (kafkajs from npm, pinned by package-lock.json).
node-participant:
	@command -v npm >/dev/null || { echo "error: npm not found: install Node.js 18+ (e.g. apt-get install nodejs npm)"; exit 1; }
	cd examples/remote_participant && npm ci --no-audit --no-fund --loglevel=error

## The chaos suite in full (1,000 sagas / 10 worker kills, broker crashes, poison, ...); prints
## its table at the end (also in $$TMPDIR/saga-chaos/report.txt). `make test` runs it reduced.
chaos: install postgres-up
	$(BIN)/python -m infra.kafka jars
	SAGA_CHAOS=full $(BIN)/pytest tests/chaos

unit: install
	$(BIN)/pytest tests/unit

integration: install postgres-up
	$(BIN)/pytest tests/integration

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## JSON Schemas of the remote-participant messages, regenerated from the pydantic models.
schemas: install
	$(BIN)/python -m coordinator._contract

demo: install
	$(BIN)/python -m examples.order_fulfillment.demo

## Benchmark: DBOS and Restate's SDK via the `bench` extra; Restate's server from npm into
## $(SAGA_CACHE_DIR) (never into the repo); Kafka started by the bench if none answers.
$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[bench]'
	@touch $@

bench-deps: $(BIN)/.bench-installed
	$(BIN)/python -m bench.restate_server install

bench: bench-deps postgres-up
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

bench-full: bench-deps postgres-up
	$(BIN)/python -m bench --full $(BENCH_ARGS)

## Long run of one coordinator worker (issue #11): RSS over 200,000 sagas with and without
## retention, restart times of both table stores (~30 min; LONGRUN_ARGS="--sagas 2000").
bench-longrun: install
	$(BIN)/python -m bench longrun $(LONGRUN_ARGS)

kafka-up: install
	$(BIN)/python -m infra.kafka up

kafka-down: install
	$(BIN)/python -m infra.kafka down

postgres-up:
	@bash infra/postgres-up.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
