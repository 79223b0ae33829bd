# `make demo` and `make test` do all set-up themselves: Debian packages, a virtual environment, Python packages.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The ray backend's packages: the suite covers that backend, while `make demo` and a plain install stay lean.
RAY_STAMP := $(VENV)/.installed-ray
# requirements.txt: requirements-base.txt and plain onnxruntime. GPU boxes: make test REQUIREMENTS=requirements-gpu.txt
REQUIREMENTS ?= requirements.txt
PYTEST_ARGS ?=

.PHONY: test test-fast demo bench lint venv debian-packages clean

# Lint and type checks first, then the suite (ray backend included); Chromium for the browser test, espeak-ng
# for real speech; Debian's ffmpeg for the real ffprobe (imageio-ffmpeg ships none) that reads our streams and
# results as players and HeyGem's desktop client do, and Node.js for the client's path.join
# (tests/test_desktop_client.py).
test: lint $(RAY_STAMP)
	@$(MAKE) --no-print-directory debian-packages PACKAGES="chromium espeak-ng ffmpeg nodejs"
	$(PY) -m pytest $(PYTEST_ARGS)

# The quick loop while working: the tests that start no server, browser or Ray cluster and take no seconds each
# (markers in pyproject.toml), in under a minute. `make test` stays the whole suite, and the CI command.
test-fast: venv
	$(PY) -m pytest -m "not server and not browser and not ray and not slow" $(PYTEST_ARGS)

# espeak-ng gives the demo real speech (without it, the demo falls back to synthetic speech-like audio).
demo: venv
	@$(MAKE) --no-print-directory debian-packages PACKAGES="espeak-ng"
	$(PY) -m heygem demo

# Figures go to docs/benchmarks.md by hand: each module prints what it measured. Festival speaks the mouth
# bench's text with exact phone times (bench.mouth_quality, docs/quality.md).
bench: venv $(RAY_STAMP)
	@$(MAKE) --no-print-directory debian-packages PACKAGES="festival festvox-us-slt-hts"
	$(PY) -m bench.supervisor
	$(PY) -m bench.supervisor --backend ray
	$(PY) -m bench.engine_speed
	$(PY) -m bench.wav2lip_speed
	$(PY) -m bench.live_stream
	$(PY) -m bench.mouth_quality

# mypy's settings and the files it checks are in pyproject.toml.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

venv: $(STAMP)

$(STAMP): requirements-base.txt $(REQUIREMENTS) requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-base.txt -r $(REQUIREMENTS) -r requirements-dev.txt
	touch $(STAMP)

$(RAY_STAMP): requirements-ray.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-ray.txt
	touch $(RAY_STAMP)

# Installs the Debian packages named in PACKAGES that are missing (apt-get; sudo when not root).
debian-packages:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
