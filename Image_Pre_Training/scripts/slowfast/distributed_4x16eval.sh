#!/usr/bin/env bash
# SlowFast-50 4x16: ImageNet top-1 / top-5 of a checkpoint.
# Usage and environment: see ../recipe.sh.
source "$(dirname "$0")/../recipe.sh"
evaluate v3d_slowfast50_4x16_224 "$@"
