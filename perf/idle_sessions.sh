#!/bin/sh
# See idle_sessions.py for what this measures and its options.
exec python3 "$(dirname "$0")/idle_sessions.py" "$@"
