# Shardwise: `make train` trains the reference network, `make test` runs every test.
# Both install what is missing first (Debian packages through apt-get when run as root).

SWIFT        ?= swift
DEB_PACKAGES := libopenblas-dev libopenblas-serial-dev libblis-dev zlib1g-dev libhwloc-dev hwloc gzip
# Files whose presence shows each package is installed (dpkg -s is slower and noisier).
DEB_PROBES   := /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \
                /usr/lib/x86_64-linux-gnu/openblas-serial/libopenblas.so.0 \
                /usr/lib/x86_64-linux-gnu/libblis.so.4 /usr/include/zlib.h /usr/include/hwloc.h /usr/bin/lstopo-no-graphics
RUN_DIR      ?= runs/reference
TRAIN_FLAGS  ?=

.PHONY: all deps build train train-no-dropout test bench clean

all: build

deps:
	@missing=0; for f in $(DEB_PROBES); do [ -e "$$f" ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian packages: $(DEB_PACKAGES)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PACKAGES) >/dev/null; \
	  else \
	    echo "Shardwise needs these Debian packages. Install them with:"; \
	    echo "  sudo apt-get install $(DEB_PACKAGES)"; \
	    exit 1; \
	  fi; \
	fi

build: deps
	$(SWIFT) build -c release --product shardwise

# The reference recipe (README, "The reference recipe"): writes $(RUN_DIR)/metrics.jsonl and summary.json.
train: build
	.build/release/shardwise train --out $(RUN_DIR) $(TRAIN_FLAGS)

# The same network and seed without dropout, for the dropout effect.
train-no-dropout: build
	.build/release/shardwise train --no-dropout --out runs/no-dropout $(TRAIN_FLAGS)

# The whole suite, then the concurrency tests again under ThreadSanitizer
# (its own build folder, so the two builds do not invalidate each other).
TSAN_TESTS := ReductionTests|WorkerPoolTests|TrainingTests.testWeightsIndependentOfWorkerCount
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build
	$(SWIFT) test --sanitize=thread --scratch-path .build-tsan --filter '$(TSAN_TESTS)'

# Kernel and training-step throughput against the machine's GEMM rate (ordo-one/benchmark).
bench: deps
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark

clean:
	rm -rf .build Benchmarks/.build
