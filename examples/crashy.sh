#!/bin/sh
# A flaky worker: runs a few seconds, then crashes with exit code 1.
# ward restarts it with exponential backoff; see `ward status` and `ward logs crashy`.
n=$(( $(od -An -N1 -tu1 /dev/urandom) % 5 + 2 ))
echo "crashy: starting, will crash in ${n}s"
sleep "$n"
echo "crashy: something went wrong, exiting with code 1" >&2
exit 1
