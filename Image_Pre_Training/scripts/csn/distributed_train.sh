#!/usr/bin/env bash
# ir-CSN-50: ImageNet pre-training with the seed's recipe.
# Usage and environment: see ../recipe.sh.
source "$(dirname "$0")/../recipe.sh"
pretrain v3d_csn50_ir_224 csn50_ir_a2_300e 0.05 "$@"
