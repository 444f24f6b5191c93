#!/usr/bin/env bash
# X3D-S: ImageNet pre-training with the seed's recipe,
# but drop path 0: the original's model had none in effect (docs/deviations.md, "Stochastic depth").
# Usage and environment: see ../recipe.sh.
source "$(dirname "$0")/../recipe.sh"
pretrain v3d_x3d_s_224 x3d_s_a2_300e 0 "$@"
