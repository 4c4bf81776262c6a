# The perception decoder's loss weights and Hungarian matching costs, as the paper gives them
# (focal classification 2.0, L1 5.0, GIoU 2.0, mask BCE 5.0, dice 5.0; the costs use the same
# weights). Every Grounding DINO recipe inherits them: bbox_head=dict(..., **_base_.losses),
# detector=dict(..., train_cfg=_base_.matching).
losses = dict(
    loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0),
    loss_bbox=dict(type='L1Loss', loss_weight=5.0),
    loss_iou=dict(type='GIoULoss', loss_weight=2.0),
    loss_mask=dict(type='CrossEntropyLoss', use_sigmoid=True, reduction='mean', loss_weight=5.0),
    loss_dice=dict(type='DiceLoss', use_sigmoid=True, activate=True, reduction='mean',
                   naive_dice=True, eps=1.0, loss_weight=5.0))
box_costs = [dict(type='BinaryFocalLossCost', weight=2.0),
             dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
             dict(type='IoUCost', iou_mode='giou', weight=2.0)]
matching = dict(
    assigner=dict(type='HungarianAssigner', match_costs=box_costs),
    mask_assigner=dict(type='HungarianAssigner', match_costs=box_costs + [
        dict(type='CrossEntropyLossCost', use_sigmoid=True, weight=5.0),
        dict(type='DiceCost', pred_act=True, eps=1.0, weight=5.0)]))
