# Two entry points of the README quick start: `make demo` and `make test`.
# Each creates .venv from constraints.txt (the tested, pinned set) when needed.
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

.PHONY: install demo test test-fast lint lock
install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medml demo --task imaging

test: $(STAMP)
	$(VENV)/bin/ruff check medml flows tests bench
	$(VENV)/bin/pytest -q -rs

# The edit-test loop: the unit tier only (the full tier is marked slow; see tests/conftest.py).
test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -rs -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check medml flows tests bench

lock: $(STAMP)
	$(VENV)/bin/pip freeze --exclude-editable | sed '1i # Tested set for python-svc (Python 3.11, CPU torch from /opt/wheels). Regenerate with `make lock`.' > constraints.txt
