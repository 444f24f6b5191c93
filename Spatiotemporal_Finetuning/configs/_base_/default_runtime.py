# Runtime settings shared by every fine-tuning config (the seed's default_runtime, plus this project's switches).
checkpoint_config = dict(interval=5)  # epoch_<n>.pth every 5 epochs and at the last; latest.pth after every epoch
log_config = dict(
    interval=20,
    hooks=[
        dict(type='TextLoggerHook'),
        # dict(type='TensorboardLoggerHook'),
        # dict(type='WandbLoggerHook', init_kwargs=dict(project='sts3d', mode='offline')),
    ])
dist_params = dict(backend='nccl')  # NCCL on GPUs; a CPU-only run uses gloo
log_level = 'INFO'
load_from = None  # the stage-1 checkpoint, e.g. --cfg-options load_from=output/train/.../model_best.pth.tar
resume_from = None
workflow = [('train', 1)]
find_unused_parameters = False
# mixed precision: fp16 with the seed's static loss scale on GPUs; on a CPU this runs in float32 (bf16 = True asks
# for bf16 autocast there)
fp16 = dict(loss_scale=512.)
# speed switches of this project (docs/benchmarks.md): bf16 autocast instead of fp16, channels_last_3d memory
# format, torch.compile of the training step (True, or a torch.compile mode: 'reduce-overhead' replays each step's
# launches as CUDA graphs, for networks whose eager GPU step waits on the host, such as X3D-S)
bf16 = False
channels_last = False
compile = False
