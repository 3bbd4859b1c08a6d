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

# ensure_postgres: a PostgreSQL server the registrar tests can log in to, at
# $RMB_TEST_POSTGRES_URL or postgres://postgres@127.0.0.1:5432/postgres. As root on
# Debian it installs and starts one if needed; on a fresh install (which wants a password
# on TCP) it gives the postgres role the password "postgres" and exports
# RMB_TEST_POSTGRES_URL accordingly. Otherwise it says what is missing.
ensure_postgres() {
    local url=${RMB_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
    ensure_cmd pg_isready postgresql-client || return 1
    ensure_cmd psql postgresql-client || return 1
    if ! pg_isready -q -d "$url" && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        ensure_cmd pg_ctlcluster postgresql || return 1
        local version
        version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
        if [ -n "$version" ]; then
            echo "==> starting PostgreSQL $version"
            pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
            local i
            for i in $(seq 1 60); do # readiness poll, at most 30 s
                pg_isready -q -d "$url" && break
                sleep 0.5
            done
        fi
    fi
    if ! pg_isready -q -d "$url"; then
        echo "error: no PostgreSQL server answers at $url (the registrar tests need one)." >&2
        echo "  Debian: sudo apt-get install postgresql && sudo pg_ctlcluster <version> main start," >&2
        echo "  or point RMB_TEST_POSTGRES_URL at a server where the user may create databases." >&2
        return 1
    fi
    psql "$url" -qAtc 'select 1' >/dev/null 2>&1 && return 0
    if [ -z "${RMB_TEST_POSTGRES_URL:-}" ] && [ "$(id -u)" = 0 ] && command -v runuser >/dev/null 2>&1; then
        echo "==> PostgreSQL wants a password on 127.0.0.1: setting one for the postgres role"
        runuser -u postgres -- psql -qc "ALTER ROLE postgres PASSWORD 'postgres'" >/dev/null &&
            export RMB_TEST_POSTGRES_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres &&
            psql "$RMB_TEST_POSTGRES_URL" -qAtc 'select 1' >/dev/null 2>&1 && return 0
    fi
    echo "error: cannot log in to PostgreSQL at $url; set RMB_TEST_POSTGRES_URL to a URL with a user that may create databases." >&2
    return 1
}
