# X3D-S + STS, Kinetics-400, 13x6 clips at 160 (short side 192); test 13x3x10 at 192, 100 epochs.
_base_ = [
    '../../_base_/models/x3d_s.py', '../../_base_/schedules/sgd_cosine_50e.py',
    '../../_base_/default_runtime.py'
]

model = dict(
    cls_head=dict(num_classes=400),
    test_cfg=dict(average_clips='prob'))

# dataset settings
dataset_type = 'VideoDataset'
data_root = 'data/kinetics400/videos_train'
data_root_val = 'data/kinetics400/videos_val'
ann_file_train = 'data/kinetics400/train_new.txt'
ann_file_val = 'data/kinetics400/val_new.txt'
ann_file_test = 'data/kinetics400/val_new.txt'
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_bgr=False)
train_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=13, frame_interval=6, num_clips=1),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 192)),
    dict(type='RandomResizedCrop'),
    dict(type='Resize', scale=(160, 160), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='Collect', keys=['imgs', 'label'], meta_keys=[]),
    dict(type='ToTensor', keys=['imgs', 'label'])
]
val_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=13, frame_interval=6, num_clips=1, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 192)),
    dict(type='CenterCrop', crop_size=160),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='Collect', keys=['imgs', 'label'], meta_keys=[]),
    dict(type='ToTensor', keys=['imgs'])
]
test_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=13, frame_interval=6, num_clips=10, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 192)),
    dict(type='ThreeCrop', crop_size=192),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='Collect', keys=['imgs', 'label'], meta_keys=[]),
    dict(type='ToTensor', keys=['imgs'])
]
data = dict(
    videos_per_gpu=32,
    workers_per_gpu=4,
    test_dataloader=dict(videos_per_gpu=1),
    decoder='decord',  # or 'pyav' (same frames, faster on H.264), 'torchcodec' (needs FFmpeg's libraries)
    train=dict(type=dataset_type, ann_file=ann_file_train, data_prefix=data_root, pipeline=train_pipeline),
    val=dict(type=dataset_type, ann_file=ann_file_val, data_prefix=data_root_val, pipeline=val_pipeline),
    test=dict(type=dataset_type, ann_file=ann_file_test, data_prefix=data_root_val, pipeline=test_pipeline))

# optimizer
optimizer = dict(lr=0.02, paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))  # lr for the seed's total batch (see docs/finetuning.md)
total_epochs = 100
evaluation = dict(interval=5, metrics=['top_k_accuracy', 'mean_class_accuracy'])
precise_bn = dict(num_iters=200, interval=1)  # recompute BN statistics on 200 train batches
inflate = False  # load the image kernels as they are (only the centre slice was trained)
work_dir = './work_dirs/x3d_s_13x6_STS_k400_video'
