# The embedded default: the tiny generalist trained on ShapesWorld on a CPU (make demo).
_base_ = [
    '../_base_/models/visionllmv2_tiny.py',
    '../_base_/datasets/shapes_world.py',
    '../_base_/schedules/iter_tiny.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['vlm2.plugins.chat'], allow_failed_imports=False)
