#!/bin/sh
# See throughput_load.py for what this measures and its options.
exec python3 "$(dirname "$0")/throughput_load.py" "$@"
