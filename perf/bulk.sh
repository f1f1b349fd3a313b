#!/bin/sh
# See bulk.py for what this measures and its options.
exec python3 "$(dirname "$0")/bulk.py" "$@"
