#!/usr/bin/env bash
# ir-CSN-50: ImageNet top-1 / top-5 of a checkpoint.
# Usage and environment: see ../recipe.sh.
source "$(dirname "$0")/../recipe.sh"
evaluate v3d_csn50_ir_224 "$@"
