#!/usr/bin/env bash
# R(2+1)D-34: ImageNet top-1 / top-5 of a checkpoint.
# Usage and environment: see ../recipe.sh.
source "$(dirname "$0")/../recipe.sh"
evaluate v3d_r2plus1d34_224 "$@"
