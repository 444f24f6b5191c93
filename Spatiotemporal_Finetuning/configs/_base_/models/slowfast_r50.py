# SlowFast-50 4x16 (tau 8, alpha 8) with STS in both pathways' 3x1x1 convs (reshape_t).
model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='ResNet3dSlowFast',
        pretrained=None,
        resample_rate=8,  # tau
        speed_ratio=8,  # alpha
        channel_ratio=8,  # beta_inv
        slow_pathway=dict(
            depth=50,
            lateral=True,
            conv1_kernel=(1, 7, 7),
            conv1_stride_t=1,
            pool1_stride_t=1,
            inflate=(0, 0, 1, 1),
            fusion_kernel=5,
            reshape_t=True),
        fast_pathway=dict(
            depth=50,
            base_channels=8,
            conv1_kernel=(5, 7, 7),
            conv1_stride_t=1,
            pool1_stride_t=1,
            reshape_t=True)),
    cls_head=dict(type='SlowFastHead', num_classes=400, in_channels=2304, spatial_type='avg', dropout_ratio=0.5,
                  init_std=0.01),
    train_cfg=None,
    test_cfg=dict(average_clips='prob'))
