#!/usr/bin/env bash
# SlowOnly-50: ImageNet top-1 / top-5 of a checkpoint.
# Usage and environment: see ../recipe.sh.
source "$(dirname "$0")/../recipe.sh"
evaluate v3d_slowonly50_224 "$@"
