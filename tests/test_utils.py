"""vlm2.utils: moving a recipe's data paths to another copy of the data set."""
from vlm2.utils import reroot


def test_reroot_moves_paths_under_the_default_root_only():
    cfg = dict(data_root='data/shapes_world/', ann=['data/shapes_world/annotations/a.json'],
               other=('data/other/x.json', 3), nested=dict(path='data/shapes_world/images/'))
    out = reroot(cfg, '/tmp/sw')
    assert out == dict(data_root='/tmp/sw/', ann=['/tmp/sw/annotations/a.json'],
                       other=('data/other/x.json', 3), nested=dict(path='/tmp/sw/images/'))
    assert cfg['data_root'] == 'data/shapes_world/'  # the input is left as it was
