# Shared by scripts/test.sh and scripts/run.sh: a virtualenv kept in sync with a
# requirements file, and Debian packages installed when missing.
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
PYTHON="${PYTHON:-python3}"

step() { echo "== $*"; }

ensure_venv() {
  local req="$1" stamp
  if [[ ! -x "$PY" ]]; then
    step "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  # Reinstall only when the requirement files changed since the last install.
  stamp="$VENV/.installed-$(cat requirements.txt "$req" | sha256sum | cut -c1-16)"
  if [[ ! -f "$stamp" ]]; then
    step "installing $req"
    "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$PY" -m pip install --quiet --disable-pip-version-check -r "$req"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
  fi
}

ensure_debian_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "!! missing Debian packages: ${missing[*]} (install them as root)" >&2
    return 1
  fi
  step "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
