# Two commands on a fresh clone:  make demo  |  make test   (make test-fast: the everyday lane, under two minutes)
# Each creates .venv if missing and (re)installs when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test test-fast install bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/segsync demo

test: $(STAMP)
	$(BIN)/python -m pytest

# The everyday lane: everything but the suites that serve vendors over HTTP end to end, run whole
# synthetic books or need PostgreSQL (the full suite, `make test`, still runs them all, and CI runs it).
SLOW_TESTS := test_e2e_sandbox.py test_serve.py test_consent_pg.py test_scoring_datasets.py
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not postgres" $(addprefix --ignore=tests/,$(SLOW_TESTS))

bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache demo-out
