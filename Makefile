# The README's two commands: `make demo` and `make test`. Each makes .venv and installs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test test-fast lint clean

# -qq: pip's errors only (this machine's pip config alone makes it warn once per package).
$(VENV)/.installed: pyproject.toml
	@echo "installing voxflow and its dependencies into $(VENV) (a few minutes, once)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The synthetic sample and real recordings (pyannote's sample conversation, two AMI meeting
# excerpts) in one run; each set scored against its own reference.
demo: $(VENV)/.installed
	$(VENV)/bin/voxflow diarize examples/sample/audio examples/real/audio --out out/sample-diarize
	$(VENV)/bin/voxflow eval diarization --ref examples/real/rttm --hyp out/sample-diarize
	$(VENV)/bin/voxflow eval diarization --ref examples/sample/rttm --hyp out/sample-diarize

test: $(VENV)/.installed
	bash .ci/ensure-chromium
	$(PY) -m pytest -q

# Unit tests only: no Ray, no job runs (the tests marked integration are left out).
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not integration"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check audio_ops pipelines tests benchmarks examples
	$(VENV)/bin/ruff format --check audio_ops pipelines tests benchmarks examples

clean:
	rm -rf out .pytest_cache
