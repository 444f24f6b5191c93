# X3D-S + STS on the embedded synthetic shape-motion videos (`make demo`, sts3d/tools/main_job.py): the K400 recipe
# shrunk to what two CPU cores fine-tune in a few minutes. 8 classes (4 shapes x down/up), 56 x 56 videos of
# 16 frames; clips of 4 frames 4 apart (the whole motion); training crops resized to 48 px, validation and test on
# the whole frame at 48 px (the image pre-training's size: the shapes keep their size in pixels). Test: 2 clips x 3 crops, as the seed's (on these square videos the three crops of
# ThreeCrop, which spans the short side, coincide).
# Paths are relative to the repository root (where `make demo` runs); the main job passes its own with
# --cfg-options data.train.ann_file=... (and data_prefix, for train, val and test).
_base_ = ['./x3d_s_13x6_STS_k400_video.py']

model = dict(
    backbone=dict(reshape_st=True),  # STS on; the main job's "plain" run passes model.backbone.reshape_st=False
    cls_head=dict(num_classes=8, dropout_ratio=0.2),
    test_cfg=dict(average_clips='prob', max_testing_views=6))

data_root = 'work_dirs/demo/data/videos/videos'
ann_file_train = 'work_dirs/demo/data/videos/train.txt'
ann_file_val = 'work_dirs/demo/data/videos/val.txt'
ann_file_test = 'work_dirs/demo/data/videos/val.txt'
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_bgr=False)
train_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=4, frame_interval=4, num_clips=1),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 56)),
    # mild crops: a crop of 8 % of the frame (the default) would often cut the shape out
    dict(type='RandomResizedCrop', area_range=(0.5, 1.0)),
    dict(type='Resize', scale=(48, 48), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),  # up and down survive a horizontal flip
    dict(type='Normalize', **img_norm_cfg),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='Collect', keys=['imgs', 'label'], meta_keys=[]),
    dict(type='ToTensor', keys=['imgs', 'label'])
]
val_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=4, frame_interval=4, num_clips=1, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 48)),
    dict(type='CenterCrop', crop_size=48),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='Collect', keys=['imgs', 'label'], meta_keys=[]),
    dict(type='ToTensor', keys=['imgs'])
]
test_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=4, frame_interval=4, num_clips=2, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 48)),
    dict(type='ThreeCrop', crop_size=48),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='Collect', keys=['imgs', 'label'], meta_keys=[]),
    dict(type='ToTensor', keys=['imgs'])
]
data = dict(
    videos_per_gpu=16,
    workers_per_gpu=1,  # one loader process decodes while the main one trains
    test_dataloader=dict(videos_per_gpu=1),
    train=dict(ann_file=ann_file_train, data_prefix=data_root, pipeline=train_pipeline),
    val=dict(ann_file=ann_file_val, data_prefix=data_root, pipeline=val_pipeline),
    test=dict(ann_file=ann_file_test, data_prefix=data_root, pipeline=test_pipeline))

optimizer = dict(lr=0.01)  # image-pretrained + STS on this set: 0.05 / 0.02 gave 39 % / 73 % val top-1 (0.01: 81 %)
lr_config = dict(warmup_iters=1)
total_epochs = 10
evaluation = dict(interval=1)
checkpoint_config = dict(interval=100)  # epoch_<n>.pth only at the last epoch
precise_bn = dict(num_iters=10, interval=8)  # once, before the last checkpoint
log_config = dict(interval=5)
# float32: the CPU's bf16 conv3d is unreliable (docs/deviations.md) and gains nothing at these sizes
fp16 = None
load_from = None  # the main job passes its stage-1 model_best.pth.tar
work_dir = './work_dirs/demo/x3d_s_demo_synthetic'
