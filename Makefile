# Two commands on a fresh clone:  make demo  |  make test   (make test-fast: the everyday lane, under two minutes)
# Each creates .venv if missing and (re)installs when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo lint test test-fast install bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/segsync demo

# The gates CI runs before any test: ruff (rules in pyproject.toml) and mypy --strict (files in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The suite over every core (pytest-xdist; tests/conftest.py hands out the longest files first, each file whole to one
# worker). Most tests wait - on loopback HTTP to the in-process simulators (one GIL), child processes, sleeps - so two
# workers on two cores overlap that waiting. PostgreSQL cases each get a schema of their own, so workers never meet.
# `make test XDIST=` runs it in one process.
XDIST ?= -n auto --dist loadfile --no-loadscope-reorder
test: lint
	$(BIN)/python -m pytest $(XDIST)

# The everyday lane (under two minutes): everything but what serves vendors over HTTP end to end, runs
# whole synthetic books, spawns CLI processes or needs PostgreSQL. `make test` (and CI) still runs it all.
SLOW_FILES := test_e2e_sandbox.py test_wealthbox_sync.py test_serve.py test_consent_pg.py test_scoring_datasets.py test_pipeline.py \
              test_csv_sync.py test_scoring_pipeline.py test_cli.py \
              test_crash_push.py test_crash_suite.py test_lock_loss.py test_hostile_input.py test_transient_answers.py \
              test_vendor_reality.py test_workers_scale.py test_redtail_sync.py test_webhook_load.py test_run_memory.py
SLOW_TESTS := test_consent_webhook.py::test_fuzz_2000_malformed_requests_no_5xx_and_nothing_written_when_refused \
              test_hubspot_connector.py::test_full_then_incremental_pull_25000_each_contact_exactly_once \
              test_hubspot_connector.py::test_starter_limit_25000_push_under_1_percent_429_nothing_lost \
              test_consent_ledger.py::test_decisions_for_100k_contacts_in_one_bulk_query \
              test_scoring_models.py::test_a_property_updated_by_the_outcome_is_flagged_as_suspected_leakage \
              test_mailchimp_connector.py::test_ten_thousand_tag_changes_cost_tens_of_calls
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow and not postgres" $(addprefix --ignore=tests/,$(SLOW_FILES)) \
		$(addprefix --deselect=tests/,$(SLOW_TESTS))

bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache demo-out
