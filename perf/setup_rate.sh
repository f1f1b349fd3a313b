#!/bin/sh
# See setup_rate.py for what this measures and its options.
exec python3 "$(dirname "$0")/setup_rate.py" "$@"
