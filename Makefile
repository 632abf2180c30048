# The README's two commands. Everything else is CMake (build/) and ctest.
#   make run     install missing packages (as root), build, run cases/smoke.ini, write results
#                and, where gnuplot is installed, this device's figures (plots/<slug>/)
#   make test    same build, then every Criterion suite through ctest (GPU suites skip without a GPU)
#   make plots   figures of every results/<slug>/ (attn-harness plot): plots/<slug>/*.{svg,png},
#                and plots/speedup-gpus.* across GPUs
# Knobs: GPU=auto|cuda|hip|none  CASES=cases/smoke.ini  BUILD=build  SANITIZE=1  JOBS=N
GPU      ?= auto
CASES    ?= cases/smoke.ini
BUILD    ?= build
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
SANITIZE ?= 0
RESULTS  ?= results

CMAKE_FLAGS := -DATTN_GPU=$(GPU) -DATTN_SANITIZE=$(if $(filter 1,$(SANITIZE)),ON,OFF)

.PHONY: all deps configure build run test plots clean
all: build

deps:
	@scripts/deps.sh

configure: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

run: build
	@scripts/run-default.sh $(BUILD) $(RESULTS) $(CASES)

# One ctest run: CPU suites in parallel, GPU suites RUN_SERIAL (they share one device).
test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

plots: build
	$(BUILD)/attn-harness plot -o plots $(RESULTS)/*/

clean:
	rm -rf $(BUILD)
