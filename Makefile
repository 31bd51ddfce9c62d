# EdgeFleet — common tasks. `make demo` and `make test` are the two a new user needs.

SWIFT ?= swift

# Debian packages the build, the tests and the demo need (the Swift toolchain itself is not one).
DEB_PACKAGES := libcurl4-openssl-dev libzstd-dev libsqlite3-dev libssl-dev pkg-config curl zstd python3

.PHONY: all deps build demo test agent bench clean

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

# The IntegrationTests run the real binaries, which `swift build` (in build) has just built.
test: build
	$(SWIFT) build --build-tests
	$(SWIFT) test

# The device binary as it ships: release, Swift runtime linked in, symbols stripped.
agent: deps
	$(SWIFT) build -c release --product fleet-agent --static-swift-stdlib -Xlinker -s
	@bin="$$($(SWIFT) build -c release --show-bin-path)/fleet-agent"; \
	ls -l "$$bin"; \
	du -h "$$bin"

# Release builds of everything, then the agent as it ships (static and stripped) over its release binary.
bench: deps
	$(SWIFT) build -c release
	$(MAKE) agent
	BIN=.build/release bash bench/run.sh
	BIN=.build/release bash bench/delta/run.sh

clean:
	$(SWIFT) package clean
