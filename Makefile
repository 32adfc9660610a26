# The two set-up commands of the README:
#   make demo   set up, generate the synthetic world, train the CPU config, evaluate, write pictures
#   make test   set up and run the test suite
PY := .venv/bin/python
OUT ?= output/synthetic_cpu
CONFIG ?= configs/synthetic/motion_rcnn_R18_C6_FPN_cpu.yaml

.PHONY: setup test demo benchmark clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q tests

# train_net.py generates the synthetic world into datasets/ on first use, trains, then
# evaluates on synthetic_val and synthetic_test (the metric tables); plot_training.py draws
# the learning curves with the zero-motion levels; demo.py draws validation pairs.
demo: setup
	$(PY) train_net.py --config-file $(CONFIG) OUTPUT_DIR $(OUT)
	$(PY) tools/plot_training.py $(OUT) --zero-motion-datasets synthetic_val synthetic_test
	$(PY) demo.py --config-file $(CONFIG) --dataset synthetic_val --max-pairs 8 \
	    --output $(OUT)/demo --opts MODEL.WEIGHTS $(OUT)/model_final.pth

benchmark: setup
	$(PY) tools/benchmark.py --quick

clean:
	rm -rf output
