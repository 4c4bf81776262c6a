"""vlm2.utils: moving a recipe's data paths to another copy of the data set."""
from vlm2.utils import reroot


def test_reroot_moves_paths_under_the_default_root_only():
    cfg = dict(data_root='data/shapes_world/', ann=['data/shapes_world/annotations/a.json'],
               other=('data/other/x.json', 3), nested=dict(path='data/shapes_world/images/'))
    out = reroot(cfg, '/tmp/sw')
    assert out == dict(data_root='/tmp/sw/', ann=['/tmp/sw/annotations/a.json'],
                       other=('data/other/x.json', 3), nested=dict(path='/tmp/sw/images/'))
    assert cfg['data_root'] == 'data/shapes_world/'  # the input is left as it was


def test_set_link_lr_mult_keeps_the_configs_other_keys():
    from mmengine.config import Config
    from vlm2.utils import set_link_lr_mult
    bare = Config(dict(optim_wrapper=dict(type='OptimWrapper')))
    set_link_lr_mult(bare, 0.5)
    assert bare.optim_wrapper.paramwise_cfg == dict(
        custom_keys={'llm.': dict(lr_mult=0.5), 'super_link.queries': dict(lr_mult=0.5)},
        bypass_duplicate=True)
    recipe = Config(dict(optim_wrapper=dict(paramwise_cfg=dict(custom_keys={
        'super_link.decoders': dict(lr_mult=0.2), 'llm.': dict(lr_mult=0.02)}))))
    set_link_lr_mult(recipe, 1.0)
    assert recipe.optim_wrapper.paramwise_cfg.custom_keys == {
        'super_link.decoders': dict(lr_mult=0.2), 'llm.': dict(lr_mult=1.0),
        'super_link.queries': dict(lr_mult=1.0)}
