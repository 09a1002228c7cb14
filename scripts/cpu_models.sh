#!/usr/bin/env bash
# Prepare the real offline CPU models (see /work/shared/MODELS.md): download, assemble, verify, convert.
exec python -m reasoning.cpu_models "$@"
