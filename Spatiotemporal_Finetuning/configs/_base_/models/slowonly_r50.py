# SlowOnly-50 with STS in its 3x1x1 convs (reshape_t).
model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='ResNet3dSlowOnly',
        depth=50,
        pretrained=None,
        conv1_kernel=(1, 7, 7),
        conv1_stride_t=1,
        pool1_stride_t=1,
        inflate=(0, 0, 1, 1),
        reshape_t=True),
    cls_head=dict(type='I3DHead', num_classes=400, in_channels=2048, spatial_type='avg', dropout_ratio=0.5,
                  init_std=0.01),
    train_cfg=None,
    test_cfg=dict(average_clips='prob'))
