# Usual targets. `make test` is what CI runs.
.PHONY: build release test lint fmt quickstart bench docker-build

build:
	cargo build --workspace

release:
	cargo build --release -p novaedge

test:
	./scripts/test.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

quickstart:
	cargo run --release -p novaedge -- run --bind 127.0.0.1 --demo-backends examples/quickstart

bench:
	./bench/proxy.sh

docker-build:
	docker build -t novaedge:dev .
