# turnout: `make demo` runs a sample batch end to end; `make test` runs the test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?= ../shared/data
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: install demo test test-unit test-e2e model bench typecheck clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## run examples/batch.jsonl through the whole pipeline into demo-out/
	$(BIN)/turnout run examples/batch.jsonl -c examples/turnout.yaml -o demo-out

test: $(STAMP)  ## every test; uses $$REDIS_URL when set, else an embedded Redis
	$(BIN)/pytest -q

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/schemas tests/router

model: $(STAMP)  ## train the default router model from $(DATA) into router/models/
	$(BIN)/python -m router.training --out router/models/default.json $(DATA)/mmlu.train.jsonl $(DATA)/gsm8k.train.jsonl

bench: $(STAMP)  ## the router's speed and held-out quality (the other bench/ scripts say how to run them)
	$(BIN)/python bench/classifier.py --data $(wildcard $(DATA)/*.train.jsonl)
	$(BIN)/python bench/router_quality.py --data $(DATA)

typecheck: $(STAMP)
	$(BIN)/mypy schemas router workers  # clean; keep it so

clean:
	rm -rf $(VENV) demo-out turnout-out .turnout .pytest_cache
