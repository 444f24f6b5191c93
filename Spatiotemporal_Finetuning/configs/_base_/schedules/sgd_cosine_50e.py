# The seed's fine-tuning schedule: SGD, gradient clipping at 40, cosine annealing per epoch with a 5-epoch
# per-iteration linear warm-up from 0.1x the rate.
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
optimizer_config = dict(grad_clip=dict(max_norm=40, norm_type=2))
lr_config = dict(policy='CosineAnnealing', min_lr=0, warmup='linear', warmup_by_epoch=True, warmup_iters=5)
total_epochs = 50
evaluation = dict(interval=5, metrics=['top_k_accuracy', 'mean_class_accuracy'])
