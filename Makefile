# Sora: the two commands a fresh machine needs are `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# torch/torchvision pinned to the releases on this machine's disk (see README).
TORCH   ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo demo-detect demo-watch test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/sora demo --out runs/demo

demo-detect: install
	$(BIN)/sora demo --task detect --out runs/demo-detect

demo-watch: install
	$(BIN)/sora demo --task watch --out runs/demo-watch

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# not part of `make test`: about an hour and three quarters on a 2-core CPU; each script rewrites its own
# section of benchmarks/RESULTS.md
bench: install
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/decode.py --repeat 5
	$(BIN)/python benchmarks/peers.py
	$(BIN)/python benchmarks/ablations.py
	$(BIN)/python benchmarks/streaming.py
	$(BIN)/python benchmarks/detection.py --seconds 240
	$(BIN)/python benchmarks/detection_stream.py
	$(BIN)/python benchmarks/tracking.py
	$(BIN)/python benchmarks/warm_start.py
	$(BIN)/python benchmarks/track_actions.py
	$(BIN)/python benchmarks/anomaly.py
	$(BIN)/python benchmarks/anomaly_alerts.py
	$(BIN)/python benchmarks/intrusion.py --detector
	$(BIN)/python benchmarks/watch_stream.py

clean:
	rm -rf $(VENV) runs .pytest_cache
