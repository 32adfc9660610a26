# The two set-up commands of the README:
#   make demo   set up, generate the synthetic world, train the CPU config, evaluate, write pictures
#   make test   set up and run the test suite
PY := .venv/bin/python
OUT ?= output/synthetic_cpu
CONFIG ?= configs/synthetic/motion_rcnn_R18_C6_FPN_cpu.yaml

.PHONY: setup test demo train eval benchmark clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q tests

demo: setup
	$(PY) tools/generate_synthetic.py --out datasets/synthetic
	$(PY) train_net.py --config-file $(CONFIG) OUTPUT_DIR $(OUT)
	$(PY) demo.py --config-file $(CONFIG) --dataset synthetic_val --output $(OUT)/demo \
	    --opts MODEL.WEIGHTS $(OUT)/model_final.pth

benchmark: setup
	$(PY) tools/benchmark.py --quick

clean:
	rm -rf output
