# Shared by scripts/demo, scripts/test and .ci/run: make sure a command exists,
# installing its Debian package when we can (root + apt-get), otherwise saying exactly
# what is missing and how to get it.

# ensure_cmd <command> <debian-package>
ensure_cmd() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> $cmd not found: installing Debian package $pkg"
        if [ -z "${RMB_APT_UPDATED:-}" ]; then
            apt-get update -qq >/dev/null && RMB_APT_UPDATED=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null &&
            command -v "$cmd" >/dev/null 2>&1 && return 0
    fi
    echo "error: '$cmd' is missing. Install it with: sudo apt-get install $pkg" >&2
    return 1
}

ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo is missing. Install Rust from https://rustup.rs (stable toolchain)." >&2
        return 1
    fi
}
