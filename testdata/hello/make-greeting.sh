#!/bin/sh
# Writes the greeting the demo image prints.
set -eu
echo "Hello from rbuild! $(cat message.txt)"
echo "(made by a RUN step as uid $(id -u) on host $(hostname))"
