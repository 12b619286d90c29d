# The README's two commands: `make demo` and `make test`. Both set everything up first.
# DDS stays on this machine: localhost discovery, shared-memory transport only.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export FASTDDS_BUILTIN_TRANSPORTS ?= SHM
export PYTHONUNBUFFERED = 1
VENV := .venv
PY := $(VENV)/bin/python
FRAMES ?= 60

.PHONY: setup demo test test-slow bench bench-seeds bench-grid bench-grid-quick reliability clean

setup:
	@bash scripts/setup.sh

# The DVFO policy (trained by setup) on the bundled digits camera with the governor on the Xavier NX twin
# (never this machine's own clocks), then the same frames under edge_only at max clocks, side by side.
DEMO_CKPT := build/demo/dvfo_xavier_nx_resnet18_32px.pt
demo: setup
	$(PY) -m dvfo_ros.cli.pipeline --frames $(FRAMES) --report out/demo.json \
	  --set governor.backend=sim --set policy.policy_mode=dvfo --set policy.checkpoint=$(DEMO_CKPT) \
	  --compare edge_only

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

# DVFO trained across network conditions (--trace mix), judged on a trace it never saw, beside every
# rival; the learnt rivals are trained as long as DVFO and on the same mix (dvfo-bench's defaults).
bench: setup
	@mkdir -p out
	$(PY) -m dvfo_ros.cli.train --device xavier_nx --model resnet18 --trace mix --steps 9000 \
	  --out out/dvfo_xavier_nx_resnet18_mix.pt --json out/train.json
	$(PY) -m dvfo_ros.cli.bench --device xavier_nx --model resnet18 --trace heldout_wifi_dropouts \
	  --checkpoint out/dvfo_xavier_nx_resnet18_mix.pt --frames 1000 \
	  --policies oracle,dvfo,dvfs_only,offload_only,edge_only,cloud_only,max_freq,ondemand \
	  --json out/bench.json --plot out/bench.png

# The DVFO paper's grid in the twin: 4 profiles x 6 models x 5 bandwidths x 2 workloads x 3 etas, every
# learnt policy trained once per (profile, model, workload, eta) and cached under build/grid/ (a rerun only
# evaluates); ~1 h on 2 free cores the first time. ARGS passes more flags (e.g. ARGS="--workers 4").
# The seed systems side by side (README "The seed systems side by side"): two boards, two held-out traces,
# resnet50 with three versions, co-runners, a shared LAN edge server and drawn accuracy requirements (~15 min each)
SEEDS = oracle,dvfo,dvfs_only,offload_only,autoscale,e2e_rl,neurosurgeon,edge_only,cloud_only,cpu_only,image_upload,max_freq,ondemand
bench-seeds: setup
	@mkdir -p out
	for D in xavier_nx nano; do $(PY) -m dvfo_ros.cli.bench --device $$D --model resnet50 \
	  --variants resnet18,mobilenet_v3_large,efficientnet_b0 --trace heldout_wifi_dropouts,heldout_drive_lte \
	  --train-trace mix --train-steps 9000 --noise 0.05 --corunner 0,0.5 --edge-server --edge-users 0,6 \
	  --accuracy-bounds 0.005,0.04,0.12 --fps 10 --episode-frames 50 --policies $(SEEDS) --frames 600 --json out/seeds_$$D.json \
	  || exit 1; done
	$(PY) scripts/seeds_table.py out/seeds_xavier_nx.json out/seeds_nano.json

bench-grid: setup
	@mkdir -p out
	$(PY) -m dvfo_ros.cli.bench grid --json out/grid.json --plot out/grid.png $(ARGS)

# The quick subset (nano and orin_nx x resnet18 and vit_b_16, eta 0.5, shorter training): a few minutes.
bench-grid-quick: setup
	@mkdir -p out
	$(PY) -m dvfo_ros.cli.bench grid --quick --json out/grid_quick.json --plot out/grid_quick.png $(ARGS)

reliability: setup
	$(PY) -m dvfo_ros.testing.reliability

clean:
	rm -rf build out
