# make install: the environment (.venv), idempotent; make demo: the tiny generalist end to end;
# make test: the test suite (make test-all adds the slow end-to-end tests).
PY := .venv/bin/python
STAMP := .venv/.installed
DATA := data/shapes_world
CONFIG := configs/visionllmv2/visionllmv2_tiny_shapes.py
WORK := work_dirs/visionllmv2_tiny_shapes
TOWER_CONFIG := configs/visionllmv2/visionllmv2_tiny_tower_pretrain.py

.PHONY: install demo test test-all data tower

install: $(STAMP)

$(STAMP): tools/install.sh setup.cfg requirements/constraints.txt requirements/runtime.txt requirements/tests.txt
	bash tools/install.sh
	touch $(STAMP)

data: $(STAMP)
	@test -f $(DATA)/meta.json || $(PY) tools/data/make_shapes_world.py --out $(DATA) --seed 0

# the pretrained tower the demo config names, trained once (like the data)
tower: data
	@ckpt=$$($(PY) -c "from mmengine import Config; print(Config.fromfile('$(CONFIG)').model.vision_tower.init_cfg.checkpoint)"); \
	test -f $$ckpt || $(PY) tools/train.py $(TOWER_CONFIG) --work-dir $$(dirname $$ckpt)

# tools/test.py evaluates the last checkpoint (MMEngine names it in WORK/last_checkpoint), so
# the training does not validate it first
demo: tower
	$(PY) tools/train.py $(CONFIG) --work-dir $(WORK) --cfg-options train_cfg.val_begin=1000000000
	$(PY) tools/test.py $(CONFIG) $$(cat $(WORK)/last_checkpoint) --work-dir $(WORK) --show-dir show

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"
