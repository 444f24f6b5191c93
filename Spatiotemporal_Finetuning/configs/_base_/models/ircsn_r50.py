# ir-CSN-50 with STS in its depthwise 3x3x3 convs (reshape_st).
model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='ResNet3dCSN',
        pretrained=None,
        depth=50,
        bottleneck_mode='ir',
        with_pool2=False,
        bn_eps=1e-3,
        reshape_st=True),
    cls_head=dict(type='I3DHead', num_classes=400, in_channels=2048, spatial_type='avg', dropout_ratio=0.5,
                  init_std=0.01),
    train_cfg=None,
    test_cfg=dict(average_clips='prob'))
