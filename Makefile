# One command vocabulary: install | run | test | check | gen | bench
PROTO_OUT := src
PROTO_FILES := proto/hostagent/v1/hostagent.proto
# E2B's envd protocol: messages only (served with connectrpc, not gRPC).
E2B_PROTO_FILES := proto/e2b/process/process.proto proto/e2b/filesystem/filesystem.proto

.PHONY: up install run test test-fast test-unit test-integration check check-web gen gen-check bench clean

# The README's first command: everything installed, then the platform in the foreground.
up:
	bash scripts/up.sh

install:
	bash scripts/install-deps.sh
	uv sync --frozen

run:
	uv run wrenn agent

# The README's test command: everything, real capsules included (needs root).
test:
	bash scripts/test.sh

# Without root, in a few minutes: the unit, control plane and orchestration tiers (the fake host
# agent), and the dashboard's mocked-API tier when it is there.
test-fast:
	uv run pytest tests/unit tests/controlplane tests/orchestration $(wildcard tests/webui) -q

test-unit:
	uv run pytest tests/unit -q

test-integration:
	uv run pytest tests/integration -q

check: gen-check check-web
	uv run ruff check src tests bench
	uv run ruff format --check src tests bench
	uv run mypy
	uv run lint-imports

# The dashboard: types (svelte-check), Prettier and ESLint, unit tests (Vitest), and its API types
# fresh against the OpenAPI document. Needs web/node_modules (scripts/build-web.sh installs them).
check-web:
	cd web && npm run --silent check && npm run --silent lint && npm run --silent test
	bash scripts/gen-web-api.sh --check

# protoc sees the files under the virtual root wrenn_server/proto, so the generated modules import
# each other as wrenn_server.proto.hostagent.v1.*. mypy-protobuf writes the type stubs (.pyi): of
# the messages (protoc-gen-mypy), and of the gRPC stub and servicer, async forms included
# (protoc-gen-mypy_grpc).
gen:
	uv run python -m grpc_tools.protoc -Iwrenn_server/proto=proto \
		--python_out=$(PROTO_OUT) --mypy_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		--mypy_grpc_out=$(PROTO_OUT) \
		$(patsubst proto/%,wrenn_server/proto/%,$(PROTO_FILES))
	uv run python -m grpc_tools.protoc -Iwrenn_server/proto=proto \
		--python_out=$(PROTO_OUT) --mypy_out=$(PROTO_OUT) \
		$(patsubst proto/%,wrenn_server/proto/%,$(E2B_PROTO_FILES))

gen-check:
	@tmp=$$(mktemp -d) && \
	uv run python -m grpc_tools.protoc -Iwrenn_server/proto=proto \
		--python_out=$$tmp --mypy_out=$$tmp --grpc_python_out=$$tmp \
		--mypy_grpc_out=$$tmp \
		$(patsubst proto/%,wrenn_server/proto/%,$(PROTO_FILES)) && \
	uv run python -m grpc_tools.protoc -Iwrenn_server/proto=proto \
		--python_out=$$tmp --mypy_out=$$tmp \
		$(patsubst proto/%,wrenn_server/proto/%,$(E2B_PROTO_FILES)) && \
	diff -r $$tmp/wrenn_server/proto src/wrenn_server/proto -x __init__.py -x __pycache__ && \
	rm -rf $$tmp && echo "generated code is fresh"

bench:
	uv run python -m bench.capsule_bench
