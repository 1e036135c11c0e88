#!/bin/sh
# Run by stage2.py in an L1 on a root finished in a tmpfs (userland.py): make the virtualenv $1 with the
# requirements that follow $3 from the wheels in $2 (downloaded by the host), check that cffi builds an
# extension with the root's C compiler, and pack the root into root.tar in $3, where stage 1 put the
# host's share of it.
# Progress goes to stderr: a run's stdout is its command's.
set -eu
exec 1>&2
venv=$1 wheels=$2 share=$3
shift 3
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --no-index --find-links "$wheels" "$@"
(cd "$(mktemp -d)" && "$venv/bin/python" -c "
import cffi
ffi = cffi.FFI()
ffi.cdef('int abs(int);')
ffi.set_source('_check', '#include <stdlib.h>')
ffi.compile()
import _check
assert _check.lib.abs(-3) == 3
print('cffi builds and loads an extension')
")
rm -rf "$wheels"
apt-get clean
# One file: far fewer 9p round trips than the root's tens of thousands (the mounts on it stay out).
tar --create --one-file-system --numeric-owner --directory / --file "$share/root.tar" --exclude ".$share" .
