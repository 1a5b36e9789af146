#!/bin/sh
# Installs what building the eBPF programs needs, and only what is missing:
#   - the nightly toolchain with rust-src (aya-build runs `rustup run nightly cargo build
#     -Z build-std=core --target bpfel-unknown-none`),
#   - LLVM 22 development files (bpf-linker 0.13.0 links libLLVM 22 dynamically),
#   - bpf-linker 0.13.0 built against LLVM 22.
# Safe to run again: every step checks first. Needs root for apt-get (or run it as root).
# Why LLVM_PREFIX: without it bpf-linker's build finds the older llvm-config on Debian images
# and fails with `unable to find library -lLLVM` (docs/TOOLCHAIN.md).
set -eu

BPF_LINKER_VERSION=0.13.0
LLVM_MAJOR=22
LLVM_PREFIX=/usr/lib/llvm-$LLVM_MAJOR

say() { printf 'setup-ebpf-toolchain: %s\n' "$*"; }

command -v rustup >/dev/null 2>&1 || { say "rustup is required (https://rustup.rs)"; exit 1; }

if ! rustup toolchain list | grep -q '^nightly'; then
    say "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
    say "adding rust-src to nightly"
    rustup component add rust-src --toolchain nightly
fi

if [ ! -x "$LLVM_PREFIX/bin/llvm-config" ]; then
    say "installing llvm-$LLVM_MAJOR-dev"
    # A fresh machine has no package lists yet: llvm-22-dev is not found without an update.
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "llvm-$LLVM_MAJOR-dev"
fi

installed=$(bpf-linker --version 2>/dev/null || true)
case "$installed" in
    *"$BPF_LINKER_VERSION"*) say "bpf-linker $BPF_LINKER_VERSION already installed" ;;
    *)
        say "installing bpf-linker $BPF_LINKER_VERSION against LLVM $LLVM_MAJOR"
        LLVM_PREFIX=$LLVM_PREFIX cargo install "bpf-linker@$BPF_LINKER_VERSION" --locked \
            --no-default-features --features "llvm-$LLVM_MAJOR"
        ;;
esac
say "ready"
