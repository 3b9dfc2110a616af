# Two commands on a fresh machine (Python 3.11+ and make): `make run`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint format bench bench-orders bench-risk bench-guard bench-mass-cancel \
	bench-batching bench-stream bench-signals bench-live-signals bench-strategy bench-scaling \
	loadtest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# The profile `make run` serves with (desk-like default limits); set ORDERGATE_CONFIG to override.
RUN_CONFIG := $(or $(ORDERGATE_CONFIG),config/development.yaml)

## run: migrate the database, print the demo key, serve on 127.0.0.1:8000 (simulated broker)
run: $(VENV)/.runtime
	$(BIN)/ordergate migrate
	@echo "demo API key (account 'demo', role trader): $$($(BIN)/ordergate keys demo)"
	ORDERGATE_CONFIG=$(RUN_CONFIG) $(BIN)/ordergate serve

## test: lint, type-check, then the whole suite (real Redis, real database, real server), in
## two processes: most of its time is spent waiting on servers it started
test: lint
	$(BIN)/pytest -n 2

lint: $(VENV)/.dev
	$(BIN)/ruff check app bench tests migrations loadtests
	$(BIN)/ruff format --check app bench tests migrations loadtests
	$(BIN)/mypy app bench

format: $(VENV)/.dev
	$(BIN)/ruff check --fix app bench tests migrations loadtests
	$(BIN)/ruff format app bench tests migrations loadtests

## bench-orders: order path vs its floor at a constant arrival rate, on SQLite then on a
## throwaway PostgreSQL database (ORDERGATE_BENCH_POSTGRES_URL, else the local server;
## without a reachable server that part says so and the SQLite result stands)
bench-orders: $(VENV)/.dev
	$(BIN)/python -m bench orders
	-$(BIN)/python -m bench orders --database postgresql

## bench-risk: the pre-trade risk decision alone vs plain Redis GETs, in process, same run
bench-risk: $(VENV)/.dev
	$(BIN)/python -m bench risk

## bench-guard: the broker guard (breaker + pacing) vs a plain Redis round trip, in process
bench-guard: $(VENV)/.dev
	$(BIN)/python -m bench guard

## bench-mass-cancel: DELETE /v1/orders over 2,000 resting orders at the paper exchange
bench-mass-cancel: $(VENV)/.dev
	$(BIN)/python -m bench mass-cancel

## bench-batching: the order bench with placement batching off and on, at 500 and 2000/s
bench-batching: $(VENV)/.dev
	$(BIN)/python -m bench batching

## bench-stream: execution reports to 100 WebSocket subscribers vs a fan-out floor
bench-stream: $(VENV)/.dev
	$(BIN)/python -m bench stream

## bench-signals: z-score + residual orthogonalization + composite vs its lstsq reference loop,
## same run; then a (2520, 3000, 20) panel (1.2 GB): wall time and peak memory
bench-signals: $(VENV)/.dev
	$(BIN)/python -m bench signals

## bench-live-signals: one new timestamp for 500 symbols, ticks to published signal, vs a floor
bench-live-signals: $(VENV)/.dev
	$(BIN)/python -m bench live-signals

## bench-strategy: tick -> signal -> order -> fill on the stream, vs the order path alone
bench-strategy: $(VENV)/.dev
	$(BIN)/python -m bench strategy

## bench-scaling: order path P50/P95 and memory with 0 / 1,000 / 10,000 resting orders over
## 1 / 100 / 1,000 accounts, and 100 subscribers; table, bench-results/scaling.{json,png}
bench-scaling: $(VENV)/.dev
	$(BIN)/python -m bench scaling

## bench: every stage's benchmark, shortened, in one run of under 5 minutes (the scaling run
## included): a table against the targets, bench-results/ (results.json, summary.md, PNGs);
## exits 1 if a stage fails. The bench-* targets above run each one at full length.
bench: $(VENV)/.dev
	$(BIN)/python -m bench suite

## loadtest: Locust, headless, 300 orders/s for 60 s against a gateway it starts (2 workers);
## exits 1 if the orders' P95 is over 200 ms or over 0.1% of requests fail. RATE=, DURATION=
LOADTEST_RATE ?= $(or $(RATE),300)
LOADTEST_DURATION ?= $(or $(DURATION),60)
loadtest: $(VENV)/.dev
	$(BIN)/python -m loadtests.run --rate $(LOADTEST_RATE) --duration $(LOADTEST_DURATION)

clean:
	rm -rf $(VENV) .data .mypy_cache .ruff_cache .pytest_cache
