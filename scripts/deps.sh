#!/bin/bash
# Install the Debian packages needed to build, run and test the modules.
# Quiet and quick when they are all there; apt-get runs only when one is
# missing.
set -euo pipefail

packages=(
    build-essential         # gcc, make
    nginx nginx-dev         # /usr/sbin/nginx and the sources to build against
    libhiredis-dev libpq-dev libjansson-dev libssl-dev zlib1g-dev
    postgresql-15           # the server (with contrib) and psql, pg_isready
    redis-server            # and redis-cli
    perl                    # prove
    libprotocol-websocket-perl
    libio-socket-ssl-perl   # wss:// in t/ws_tls.t
    curl procps iproute2    # curl, pgrep, ss
    python3-botocore        # reference AWS SigV4 signatures (t/asset_sigv4.t)
    chromium                # the web client's browser suite (t/browser.t)
)

# Installed when the archive has them.
optional=(
    libjson-pp-perl         # a newer JSON::PP than perl's own
)

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" \
        = installed ]
}

missing=()
for p in "${packages[@]}" "${optional[@]}"; do
    installed "$p" || missing+=("$p")
done

[ ${#missing[@]} -eq 0 ] && exit 0

sudo=
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || {
        echo "deps: missing ${missing[*]}; run as root to install" >&2
        exit 1
    }
    sudo=sudo
fi

export DEBIAN_FRONTEND=noninteractive

echo "deps: installing ${missing[*]}"
$sudo apt-get update -qq

want=()
for p in "${missing[@]}"; do
    if [[ " ${optional[*]} " == *" $p "* ]] && \
       ! apt-cache show "$p" >/dev/null 2>&1
    then
        continue
    fi
    want+=("$p")
done

# Package scripts would start the system's nginx (port 80), Redis and
# PostgreSQL. Our scripts run their own instances, so forbid the starts
# while installing (policy-rc.d, honoured by invoke-rc.d and
# deb-systemd-invoke), unless the machine already has a policy.
policy=/usr/sbin/policy-rc.d
ours=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    ours=1
fi
cleanup() {
    if [ -n "$ours" ]; then
        $sudo rm -f "$policy"
    fi
}
trap cleanup EXIT

if [ ${#want[@]} -gt 0 ]; then
    $sudo apt-get install -y -qq -o Dpkg::Use-Pty=0 \
        --no-install-recommends "${want[@]}" >/dev/null
fi

# Should a service have started anyway, stop it: it only takes resources
# and ports. (Without systemd there may be nothing to stop.)
if command -v service >/dev/null; then
    for s in nginx redis-server postgresql; do
        $sudo service "$s" stop >/dev/null 2>&1 || true
    done
fi

for p in "${packages[@]}"; do
    installed "$p" || { echo "deps: $p did not install" >&2; exit 1; }
done
echo "deps: done"
