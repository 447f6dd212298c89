# The two set-up commands of the README: `make demo` and `make test`. Each builds .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_WORKERS ?= 8

.PHONY: demo test lint check test-minimal bench clean

$(STAMP): setup.py pyproject.toml examples/balog-postgres/setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,test]'
	$(BIN)/python -m pip install -q -e examples/balog-postgres
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# Independent tests in parallel (they use their own queues, keys and files), then the few that
# restart a shared broker, alone.
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=20 -m "not disruptive"
	$(BIN)/python -m pytest -m disruptive

lint: $(STAMP)
	$(BIN)/ruff check balog tests benchmarks examples
	$(BIN)/ruff format --check balog tests benchmarks examples
	$(BIN)/mypy

check: lint test test-minimal

# The core with no extras: no boto3, kombu or orjson (the standard-library JSON codec).
MINIMAL := .venv-minimal
test-minimal:
	rm -rf $(MINIMAL)
	$(PYTHON) -m venv $(MINIMAL)
	$(MINIMAL)/bin/python -m pip install -q -e . pytest hypothesis
	$(MINIMAL)/bin/python -c "import sys, balog.events as e; assert e.loads is e.std_loads; \
	  assert not {'boto3', 'kombu', 'orjson'} & set(sys.modules)"
	$(MINIMAL)/bin/python -m pytest -q -p no:cacheprovider tests/test_events.py \
	  tests/test_consumers.py tests/test_producer.py tests/test_engine.py tests/test_plugins.py

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[all,test,bench]'
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(MINIMAL) build *.egg-info
