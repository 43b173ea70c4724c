# Two commands for a new user: `make demo` (set up, then analyse the bundled example) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench

$(BIN)/fakescope: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	# facenet-pytorch (the MTCNN backend) pins an old torch; its code runs on the current one.
	$(BIN)/pip install requests && $(BIN)/pip install --no-deps 'facenet-pytorch>=2.5'
	touch $(BIN)/fakescope

setup: $(BIN)/fakescope

demo: setup
	$(BIN)/python -m fakescope.example example/astronaut.mp4
	$(BIN)/fakescope analyze example/astronaut.mp4 --out example/out --explain hirescam++,gradcam-n,gradcam-n1,hirescam
	@echo "report: example/out/astronaut/report.html"

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/bench_explain.py
	$(BIN)/python benchmarks/bench_scan.py
	$(BIN)/python benchmarks/bench_pipeline.py
