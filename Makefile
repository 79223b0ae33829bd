# `make demo` and `make test` do all set-up themselves: Debian packages, a virtual environment, Python packages.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REQUIREMENTS ?= requirements.txt
DEBIAN_PACKAGES := chromium espeak-ng
PYTEST_ARGS ?=

.PHONY: test demo bench lint system-deps venv clean

test: venv system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

demo: venv
	$(PY) -m heygem demo

bench: venv
	$(PY) -m bench

lint: venv
	$(VENV)/bin/ruff check .

venv: $(STAMP)

$(STAMP): $(REQUIREMENTS) requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(REQUIREMENTS) -r requirements-dev.txt
	touch $(STAMP)

# Only what the tests need beyond Python: Chromium for the browser test, espeak-ng for real speech.
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
