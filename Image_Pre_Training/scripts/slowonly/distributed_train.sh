#!/usr/bin/env bash
# SlowOnly-50: ImageNet pre-training with the seed's recipe.
# Usage and environment: see ../recipe.sh.
source "$(dirname "$0")/../recipe.sh"
pretrain v3d_slowonly50_224 slowonly50_a2_300e 0.05 "$@"
