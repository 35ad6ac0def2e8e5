# Shardwise: `make train` trains the reference network, `make test` runs every test.
# Both install what is missing first (Debian packages through apt-get when run as root).

SWIFT        ?= swift
DEB_PACKAGES := libopenblas-dev libopenblas-serial-dev libblis-dev zlib1g-dev libhwloc-dev hwloc gzip libopenmpi-dev openmpi-bin python3-sklearn iproute2
# Files whose presence shows each package is installed (dpkg -s is slower and noisier).
DEB_PROBES   := /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \
                /usr/lib/x86_64-linux-gnu/openblas-serial/libopenblas.so.0 \
                /usr/lib/x86_64-linux-gnu/libblis.so.4 /usr/include/zlib.h /usr/include/hwloc.h /usr/bin/lstopo-no-graphics \
                /usr/include/x86_64-linux-gnu/openmpi/mpi.h /usr/bin/mpirun /usr/lib/python3/dist-packages/sklearn/__init__.py /usr/sbin/tc
RUN_DIR      ?= runs/reference
# mpirun refuses to run as root unless told.
MPIRUN_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-run-as-root)
TRAIN_FLAGS  ?=

.PHONY: dist install dist-check all deps build train train-no-dropout train-cnn train-resnet train-gpt train-gpt-large reproduce-dropout test fuzz example docs bench bench-mpi bench-multihost bench-portable bench-pytorch bench-data sklearn-data sklearn-compare clean

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

# --manifest-cache none: the manifest reads the git commit that --version prints, afresh.
build: deps
	$(SWIFT) build -c release --product shardwise --manifest-cache none

# The reference recipe (README, "The reference recipe"): writes $(RUN_DIR)/metrics.jsonl and summary.json.
train: build
	.build/release/shardwise train --out $(RUN_DIR) $(TRAIN_FLAGS)

# The same network and seed without dropout, for the dropout effect.
train-no-dropout: build
	.build/release/shardwise train --no-dropout --out runs/no-dropout $(TRAIN_FLAGS)

# A convolutional network with dropout (Examples/models/mnist-cnn.yaml, its recipe in the file: Adam,
# cosine, max-norm, 20 epochs; README, "Convolutions, embeddings, Adam"): about 0.5% test error, ~6 minutes on 2 cores.
train-cnn: build
	.build/release/shardwise train --model Examples/models/mnist-cnn.yaml --out runs/cnn $(TRAIN_FLAGS)

# A small residual network with BatchNorm (the global batch's statistics) and dropout
# (Examples/models/mnist-resnet.yaml, its recipe in the file: PyTorch's initialisation, Adam at 2e-3,
# cosine, no max-norm, 10 epochs; README, "Residual networks and normalization"): 0.30% test error,
# about 10 minutes on 2 cores.
train-resnet: build
	.build/release/shardwise train --model Examples/models/mnist-resnet.yaml --seed 1 --out runs/resnet $(TRAIN_FLAGS)

# A character-level GPT on tiny Shakespeare (Examples/models/shakespeare-char.yaml, its recipe in the
# file: nanoGPT's small CPU recipe, 2,000 steps; README, "Language models"), then a sample of its text.
GPT_DATA ?= ../shared/datasets/tinyshakespeare/input.txt
train-gpt: build
	.build/release/shardwise train --data $(GPT_DATA) --tokenizer char --context 64 --model Examples/models/shakespeare-char.yaml --shard-size 6 --out runs/gpt $(TRAIN_FLAGS)
	.build/release/shardwise generate --checkpoint runs/gpt --prompt "ROMEO:" --tokens 300 --temperature 0.8 --top-k 40 --seed 1

# A larger GPT with dropout 0.1, and the same model and seed without dropout, on one chart
# (runs/gpt-large/curves.svg; README, "Language models"). About an hour on 2 cores: not part of CI.
train-gpt-large: build
	.build/release/shardwise train --data $(GPT_DATA) --tokenizer char --context 128 --model Examples/models/shakespeare-char-large.yaml --shard-size 16 --compare-no-dropout --out runs/gpt-large $(TRAIN_FLAGS)
	.build/release/shardwise generate --checkpoint runs/gpt-large --prompt "ROMEO:" --tokens 300 --temperature 0.8 --top-k 40 --seed 1

# Srivastava et al. 2014, MNIST, 3x1024 ReLU with dropout and max-norm, and the same without dropout
# (README, "Reproducing the dropout paper"). Long: not part of CI. The paper's errors beside ours
# (its Table 2): 1.06% for dropout + max-norm, 3x1024 ReLU; 1.60% for its standard network without dropout.
REPRO_DIR   ?= runs/reproduce
REPRO_FLAGS := --layers 1024,1024,1024 --dropout-input 0.2 --dropout-hidden 0.5 --max-norm 2 \
               --momentum-start 0.5 --momentum 0.95 --momentum-ramp 10 --lr 0.025 --schedule cosine --lr-floor 0.01 \
               --batch-size 128 --shard-size 64 --seed 1
reproduce-dropout: build
	.build/release/shardwise train --out $(REPRO_DIR)/dropout $(REPRO_FLAGS) --epochs 400
	.build/release/shardwise train --out $(REPRO_DIR)/no-dropout $(REPRO_FLAGS) --epochs 100 --no-dropout
	.build/release/shardwise curves $(REPRO_DIR)/dropout $(REPRO_DIR)/no-dropout --out $(REPRO_DIR)/curves.svg \
	  --table $(REPRO_DIR)/table.md --paper-error 1.06 --paper-error 1.60

# The whole suite, then the concurrency tests again under ThreadSanitizer
# (its own build folder, so the two builds do not invalidate each other).
TSAN_TESTS := ReductionTests|WorkerPoolTests|EventChannelTests|SweepTests.testTrialsSideBySideOnASmallCSV|TrainingTests.testWeightsIndependentOfWorkerCount|TrainingTests.testConvolutionsAdamAndClippingIndependentOfWorkerCount|TrainingTests.testTreeModelsIndependentOfWorkerCount|TrainingTests.testCancelledStepIsAbandonedWithoutATrace
# The suite runs optimized (the code users run, about 5x faster than a debug build: 3 minutes
# instead of 17 on 2 cores), in its own build folder so that `make build` keeps its own.
TEST_BUILD := -c release -Xswiftc -enable-testing --scratch-path .build-test
test: deps
	$(SWIFT) build --build-tests $(TEST_BUILD)
	$(SWIFT) test --skip-build $(TEST_BUILD)
	rm -f .build-tsan/race-report.*
	TSAN_OPTIONS=log_path=$(CURDIR)/.build-tsan/race-report $(SWIFT) test --sanitize=thread --scratch-path .build-tsan --filter '$(TSAN_TESTS)' \
	  || { cat .build-tsan/race-report.* 2>/dev/null; exit 1; }
	$(MAKE) example
	$(MAKE) dist-check DIST_CONTROL=.build-test/release/shardwise

# The IDX and safetensors readers against many random mutations of valid files (make test runs 3,000), and
# model descriptions: random layer strings, mutated model files and checkpoint metadata (make test runs 10,000).
FUZZ_ITERATIONS ?= 200000
fuzz: deps
	$(SWIFT) build --build-tests $(TEST_BUILD)
	SHARDWISE_FUZZ_ITERATIONS=$(FUZZ_ITERATIONS) $(SWIFT) test --skip-build $(TEST_BUILD) --filter 'ReaderFuzzTests|ModelFuzzTests'

# Examples/TrainMNIST: a package that depends on the Shardwise product by path, with a layer of
# its own. Its tests (gradient check, worker-count contract), then one short epoch on MNIST.
EXAMPLE := Examples/TrainMNIST
MNIST   ?= $(firstword $(wildcard data/mnist ../shared/datasets/mnist))
example: deps
	$(SWIFT) build --package-path $(EXAMPLE) --build-tests
	$(SWIFT) test --package-path $(EXAMPLE) --skip-build
	@if [ -n "$(MNIST)" ]; then $(EXAMPLE)/.build/debug/TrainMNIST $(MNIST) 1 6000; \
	 else echo "MNIST not found (data/mnist or ../shared/datasets/mnist): the example's training run is skipped"; fi

# The library's documentation (DocC), into .build/plugins/Swift-DocC/outputs/Shardwise.doccarchive.
docs:
	$(SWIFT) package generate-documentation --target Shardwise

# Kernel and training-step throughput against the machine's GEMM rate (ordo-one/benchmark).
bench: deps
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark

# The portable kernels against the BLAS: product by product, then training samples/s (README, "The determinism contract").
bench-portable: build
	Benchmarks/kernels/bench_portable.sh .build/release/shardwise

# Two ranks on this machine: the cross-rank step against MPI_Allreduce, 2 ranks against 1 process.
# Shardwise against PyTorch (pip install torch) on this machine in one run: each convolution of the
# CNN on one thread, the CNN's and the reference MLP's training steps on all cores (BENCH_REPEATS runs, median).
BENCH_REPEATS ?= 3
bench-pytorch: build
	python3 Benchmarks/pytorch/bench_vs_pytorch.py .build/release/shardwise $(BENCH_REPEATS)

bench-mpi: build
	mpirun $(MPIRUN_FLAGS) -np 2 .build/release/shardwise bench

# Two "hosts" (network namespaces with one core each, Tests/multihost/testbed.sh) over TCP at 10 and
# 1 Gbit/s: the step split into compute, reduction and exposed communication, overlapped or not, each
# exchange pattern, against one process on the same cores, in one run (README, "Across machines"). Root.
bench-multihost: build
	/usr/bin/python3 Benchmarks/multihost/bench_multihost.py .build/release/shardwise

# A relocatable release: the binary with the Swift standard library and Foundation linked
# statically (its own build folder), completions, man pages, README and license, in
# dist/shardwise-VERSION-linux-ARCH.tar.gz. It needs only libopenblas0, libhwloc15, libopenmpi3, zlib1g.
VERSION   := $(shell sed -n 's/.*static let current = "\(.*\)"/\1/p' Sources/ShardwiseEngine/TrainingState.swift)
DIST_NAME := shardwise-$(VERSION)-linux-$(shell uname -m)
DIST_DIR  := dist/$(DIST_NAME)
PREFIX    ?= /usr/local
# The binary carries the shared libraries it links (hwloc, zlib, what they need, the C++ runtime)
# in lib/shardwise/ (out of the loader's search path when installed under /usr/local), found through
# an RPATH of $ORIGIN/../lib/shardwise that also covers the libraries' own
# dependencies (DT_RPATH, not RUNPATH): it starts with the C library alone. Open MPI and the
# BLAS are opened at run time, only when needed (an mpirun launch, --kernels blas).
DIST_LINK := -Xlinker -rpath -Xlinker '$$ORIGIN/../lib/shardwise' -Xlinker --disable-new-dtags
GLIBC_LIBS := libc.so.6|libm.so.6|libdl.so.2|libpthread.so.0|librt.so.1|ld-linux-x86-64.so.2|ld-linux-aarch64.so.1
dist: deps
	$(SWIFT) build -c release --static-swift-stdlib --product shardwise --scratch-path .build-dist --manifest-cache none $(DIST_LINK)
	$(SWIFT) package plugin generate-manual --multi-page
	rm -rf $(DIST_DIR) $(DIST_DIR).tar.gz
	mkdir -p $(DIST_DIR)/bin $(DIST_DIR)/lib/shardwise $(DIST_DIR)/share/man/man1 $(DIST_DIR)/share/bash-completion/completions \
	         $(DIST_DIR)/share/zsh/site-functions $(DIST_DIR)/share/fish/vendor_completions.d
	cp .build-dist/release/shardwise $(DIST_DIR)/bin/ && strip $(DIST_DIR)/bin/shardwise
	ldd .build-dist/release/shardwise | awk '$$2 == "=>" && $$3 ~ /^\// { print $$1, $$3 }' | grep -Ev '^($(GLIBC_LIBS)) ' | \
	  while read name path; do cp -L "$$path" $(DIST_DIR)/lib/shardwise/"$$name"; done
	$(DIST_DIR)/bin/shardwise --generate-completion-script bash > $(DIST_DIR)/share/bash-completion/completions/shardwise
	$(DIST_DIR)/bin/shardwise --generate-completion-script zsh > $(DIST_DIR)/share/zsh/site-functions/_shardwise
	$(DIST_DIR)/bin/shardwise --generate-completion-script fish > $(DIST_DIR)/share/fish/vendor_completions.d/shardwise.fish
	cp .build/plugins/GenerateManual/outputs/ShardwiseCLI/*.1 $(DIST_DIR)/share/man/man1/
	cp README.md LICENSE $(DIST_DIR)/
	tar czf $(DIST_DIR).tar.gz -C dist $(DIST_NAME)
	@echo "$(DIST_DIR).tar.gz"

# The same pieces into PREFIX: bin/, share/man/man1/, and the shells' completion folders.
install: dist
	mkdir -p $(PREFIX)
	cp -R $(DIST_DIR)/bin $(DIST_DIR)/lib $(DIST_DIR)/share $(PREFIX)/
	@echo "installed shardwise into $(PREFIX)/bin; man pages in $(PREFIX)/share/man/man1"

# The tarball runs on a bare machine: its binary, in a root holding the C library alone, trains,
# evaluates, predicts, exports and shows the topology and the kernels; under mpirun (outside that
# root, where Open MPI is) it gives the single-process weights. DIST_CONTROL: a binary linked
# against the toolchain, which must fail to start where the check runs the tarball's.
DIST_CONTROL ?= .build/release/shardwise
dist-check: dist
	Tests/dist/check.sh $(DIST_DIR).tar.gz "$(MNIST)" $(DIST_CONTROL)

# scikit-learn's bundled data sets (Debian's python3-sklearn), split 75/25 with a fixed seed,
# as CSV, NPY pairs, NPZ and safetensors (README, "Your own data").
sklearn-data: build
	/usr/bin/python3 Tests/python/export_sklearn.py data/sklearn

# Shardwise with and without dropout against scikit-learn's MLP on those data sets (a table).
sklearn-compare: build
	/usr/bin/python3 Benchmarks/data/sklearn_compare.py .build/release/shardwise /tmp/shardwise-sklearn

# Own data: mapped uint8 against in-memory floats, peak RssAnon on 8 GB and 1 GB of data, CSV
# parsing against pandas. Writes about 10 GB under BENCH_DATA_DIR. Long: not part of CI.
BENCH_DATA_DIR ?= /tmp/shardwise-bench-data
bench-data: build
	/usr/bin/python3 Benchmarks/data/bench_data.py .build/release/shardwise $(MNIST) $(BENCH_DATA_DIR)

clean:
	rm -rf .build .build-tsan .build-dist dist Benchmarks/.build $(EXAMPLE)/.build
