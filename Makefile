# Two entry points: `make demo` and `make test`. Both create .venv and install only when
# pyproject.toml changed since the last install (the stamp file), so the second run is fast.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/segflow demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) data .dagster_home

# The production layout on this machine (deploy/README.md): PostgreSQL, dagster-daemon, dagster-webserver on
# 127.0.0.1:3000 and a Stripe emulator with sandbox accounts, all under .stack/. `make stack-stop` ends them.
.PHONY: stack stack-stop
stack: $(STAMP)
	deploy/stack.sh start

stack-stop:
	deploy/stack.sh stop
