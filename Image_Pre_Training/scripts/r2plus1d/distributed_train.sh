#!/usr/bin/env bash
# R(2+1)D-34: ImageNet pre-training with the seed's recipe.
# Usage and environment: see ../recipe.sh.
source "$(dirname "$0")/../recipe.sh"
pretrain v3d_r2plus1d34_224 r2plus1d34_a2_300e 0.05 "$@"
