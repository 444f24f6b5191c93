#!/usr/bin/env bash
# SlowFast-50 4x16: ImageNet pre-training with the seed's recipe,
# but drop path 0: the original's model had none in effect (docs/deviations.md, "Stochastic depth").
# Usage and environment: see ../recipe.sh.
source "$(dirname "$0")/../recipe.sh"
pretrain v3d_slowfast50_4x16_224 slowfast50_4x16_a2_300e 0 "$@"
