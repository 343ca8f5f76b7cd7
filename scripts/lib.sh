# Shared helpers for the scripts in this directory. Source it; it defines functions only.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

die() { printf 'error: %s\n' "$*" >&2; exit 2; }

need_root() {
    [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts dockerd)"
}

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# Start dockerd unless one already answers (CI and containers have no systemd to do it).
ensure_dockerd() {
    if docker info >/dev/null 2>&1; then return 0; fi
    if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
        systemctl start docker || true
    fi
    if ! docker info >/dev/null 2>&1; then
        log "starting dockerd (log: /var/log/dockerd.log)"
        setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
    fi
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    tail -20 /var/log/dockerd.log >&2 || true
    die "dockerd did not answer within 60 s"
}

# The script's usage: its header comment, from the second line to the first line that is not a comment.
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

# Bad usage: the reason and where the usage is, exit 2, before anything has changed.
usage_error() {
    printf 'error: %s\n(%s --help shows the usage)\n' "$*" "$0" >&2
    exit 2
}

# Refuse one argument the script does not know: an option, or an operand it takes none of.
refuse_argument() {
    case $1 in
        -?*) usage_error "unknown option: $1" ;;
        *) usage_error "unexpected argument: $1" ;;
    esac
}

# For the scripts that take no arguments: -h/--help prints the usage, anything else is refused.
no_arguments() {
    [ $# -gt 0 ] || return 0
    case $1 in -h | --help) usage; exit 0 ;; esac
    refuse_argument "$1"
}

# pip options that reach PyPI alone, whatever this machine's pip configuration says (find-links,
# extra indexes, constraints files, PIP_* variables): --isolated, the index named, pip's own cache
# off. GPUHOST_PYPI_INDEX_URL names a mirror; the CA bundle is the system's (a TLS-inspecting proxy).
pypi_pip_args() {
    local cert=${PIP_CERT:-${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}}
    printf '%s\n' --isolated --no-cache-dir --disable-pip-version-check \
        --index-url "${GPUHOST_PYPI_INDEX_URL:-https://pypi.org/simple}"
    [ -s "$cert" ] && printf '%s\n' --cert "$cert"
    return 0
}
