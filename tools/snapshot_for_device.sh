#!/usr/bin/env bash
# Other engineers edit kernel sources in the shared working tree while a device run is prepared; this copies the
# committed (HEAD) versions of the kernel and build files into .devsnap/, which device_run.sh restores on the device.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .devsnap && mkdir -p .devsnap
git archive HEAD cpp cmake CMakeLists.txt python tests bench | tar -x -C .devsnap --exclude=bench/results  # keeps the carry small
git rev-parse --short HEAD > .devsnap/COMMIT
