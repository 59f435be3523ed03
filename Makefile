# Entry points: `make demo`, `make ui`, `make test` (daily work), `make test-all` (what CI runs).
# Each installs into .venv first, only when needed: the venv is (re)built when it is missing, broken (its python
# does not start or lacks the installed packages), or built by another Python than $(PYTHON); the install runs again
# when pyproject.toml changed. A failed build removes the venv, so the next run starts clean instead of reusing it.

SUPPORTED := 3.11 3.12 3.13
# The first supported interpreter on PATH that starts, unless PYTHON is given (make demo PYTHON=python3.12).
PYTHON ?= $(firstword $(foreach v,$(SUPPORTED),$(shell python$(v) -c '' >/dev/null 2>&1 && echo python$(v))) python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PY_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
VENV_VERSION := $(shell $(BIN)/python -c 'import sys, importlib.util as u; \
	ok = u.find_spec("dagster") and u.find_spec("segflow_pipeline"); print("%d.%d" % sys.version_info[:2] if ok else "")' 2>/dev/null)

.PHONY: demo ui test test-all install clean stack stack-stop FORCE

ifneq ($(VENV_VERSION),$(PY_VERSION))
$(STAMP): FORCE
endif

$(STAMP): pyproject.toml
	@test -n "$(PY_VERSION)" || { echo "make: $(PYTHON) not found; install Python $(SUPPORTED) or run e.g. make $(MAKECMDGOALS) PYTHON=python3.12" >&2; exit 1; }
	@case " $(SUPPORTED) " in *" $(PY_VERSION) "*) ;; *) echo "make: $(PYTHON) is Python $(PY_VERSION); segflow-pipeline supports $(SUPPORTED): run e.g. make $(MAKECMDGOALS) PYTHON=python3.12" >&2; exit 1;; esac
	@if [ "$(VENV_VERSION)" != "$(PY_VERSION)" ]; then \
		echo "Building $(VENV) with $(PYTHON) (Python $(PY_VERSION))$(if $(VENV_VERSION), replacing one built with Python $(VENV_VERSION),)"; \
		rm -rf $(VENV); \
		$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }; \
	fi
	@echo "Installing segflow-pipeline and its pinned dependencies into $(VENV) (a few minutes the first time)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]' || { rm -rf $(VENV); echo "make: install failed; $(VENV) removed, the next run starts clean" >&2; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

# The whole pipeline once on the built-in Stripe emulator (or your account if STRIPE_API_KEY is set); ends with
# today's MRR and where the DuckDB file, the charts and the UI are. Runs are kept in .dagster_home for `make ui`.
demo: $(STAMP)
	$(BIN)/segflow demo

# Dagster UI on http://127.0.0.1:3000 with the sandbox (unless STRIPE_API_KEY is set); history kept in .dagster_home.
ui: $(STAMP)
	$(BIN)/segflow ui

# Daily work: everything but the tests marked slow (end-to-end fault storms, kill -9, the deployment stack).
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# Everything, as CI runs it.
test-all: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) data .dagster_home

FORCE:

# The production layout on this machine (deploy/README.md): PostgreSQL, dagster-daemon, dagster-webserver on
# 127.0.0.1:3000 and a Stripe emulator with sandbox accounts, all under .stack/. `make stack-stop` ends them.
stack: $(STAMP)
	deploy/stack.sh start

stack-stop:
	deploy/stack.sh stop
