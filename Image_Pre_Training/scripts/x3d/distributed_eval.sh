#!/usr/bin/env bash
# X3D-S: ImageNet top-1 / top-5 of a checkpoint.
# Usage and environment: see ../recipe.sh.
source "$(dirname "$0")/../recipe.sh"
evaluate v3d_x3d_s_224 "$@"
