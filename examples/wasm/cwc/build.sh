#!/bin/sh
# Builds plugin.wasm from cwc.c with clang's wasm32-wasi target and wasi-libc.
#   Debian/Ubuntu:  apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32
#                   (the libclang-rt package matching clang's version)
#   elsewhere:      wasi-sdk, with WASI_SYSROOT=/path/to/wasi-sdk/share/wasi-sysroot
# conduit.h comes from the installed Conduit: PYTHON is the Python that has it.
set -eu
cd "$(dirname "$0")"
CC=${CC:-clang}
PYTHON=${PYTHON:-python3}
if [ -z "${WASI_SYSROOT:-}" ]; then
    # Debian's wasi-libc is in /usr/{include,lib}/wasm32-wasi; wasi-sdk's is a sysroot
    if [ -d /usr/share/wasi-sysroot ]; then WASI_SYSROOT=/usr/share/wasi-sysroot; else WASI_SYSROOT=/usr; fi
fi
INCLUDE=$("$PYTHON" -c 'import conduit, os; print(os.path.join(os.path.dirname(conduit.__file__), "include"))')
"$CC" --target=wasm32-wasi --sysroot="$WASI_SYSROOT" -O2 -s -Wall -Wextra -Werror \
    -I "$INCLUDE" -o plugin.wasm cwc.c
echo "built $(pwd)/plugin.wasm"
