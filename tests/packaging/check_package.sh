#!/usr/bin/env bash
# The install layout and the .deb, checked in scratch directories:
#   1. `cmake --install` into a scratch prefix: every file in place, the unit accepted by
#      `systemd-analyze verify`, the default config accepted by `emberd --check-config`;
#   2. the .deb (cpack): `dpkg-deb -c` lists the expected files, the control file has the
#      conffile and the dependencies, the maintainer scripts parse;
#   3. the .deb unpacked into a scratch root (`dpkg -x`): its emberd starts, finds the runtimes
#      installed beside it and serves a function;
#   4. the maintainer scripts run in a private mount namespace over a copy of /etc: postinst
#      creates the ember system user and group (twice: idempotent), postrm purge removes them.
# Usage: check_package.sh BUILD_DIR SOURCE_DIR. Exit 77 (skipped) only for missing privileges.
set -euo pipefail
build="$(cd "$1" && pwd)"
src="$(cd "$2" && pwd)"
work="$(mktemp -d)"
daemon_pid=""
cleanup() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

step "cmake --install into a scratch prefix"
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in bin/emberd bin/ember share/bash-completion/completions/ember \
         share/ember/runtimes/node/bootstrap.js share/ember/runtimes/python/bootstrap.py \
         share/ember/runtimes/provided/ember-runtime-api \
         lib/systemd/system/emberd.service etc/ember/emberd.json share/doc/ember/operations.md \
         share/doc/ember/README.md; do
  [ -f "$prefix/$f" ] || fail "cmake --install did not put $f in place"
done
[ -x "$prefix/bin/emberd" ] || fail "emberd is not executable"
[ -x "$prefix/bin/ember" ] || fail "ember is not executable"
unit="$prefix/lib/systemd/system/emberd.service"
grep -qx "ExecStart=$prefix/bin/emberd --config $prefix/etc/ember/emberd.json" "$unit" \
  || fail "the unit does not start the installed binary with the installed config: $(grep ExecStart "$unit")"
for key in Type=notify Delegate=yes StateDirectory=ember RuntimeDirectory=ember KillMode=mixed \
           Restart=on-failure WatchdogSec=30s LimitNOFILE=65536; do
  grep -qx "$key" "$unit" || fail "the unit lacks $key"
done
command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (scripts/setup --test installs systemd)"
systemd-analyze verify "$unit" || fail "systemd-analyze verify rejected the unit"
"$prefix/bin/emberd" --check-config --config "$prefix/etc/ember/emberd.json" >/dev/null \
  || fail "the default config does not pass --check-config"

step "cpack: the .deb"
(cd "$work" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/pkg" >/dev/null) \
  || fail "cpack could not build the package"
deb="$(ls "$work"/pkg/ember_*_amd64.deb)"
listing="$(dpkg-deb -c "$deb" | awk '{print $6}')"
for f in ./usr/bin/emberd ./usr/bin/ember ./usr/share/bash-completion/completions/ember \
         ./usr/lib/systemd/system/emberd.service ./etc/ember/emberd.json \
         ./usr/share/ember/runtimes/node/bootstrap.js ./usr/share/ember/runtimes/python/bootstrap.py \
         ./usr/share/ember/runtimes/provided/ember-runtime-api \
         ./usr/share/doc/ember/operations.md; do
  grep -qx "$f" <<<"$listing" || fail "dpkg-deb -c does not list $f"
done
if grep -E '^\./(usr/local|tmp|root|home)' <<<"$listing"; then fail "files outside the usual places"; fi
mkdir "$work/control"
dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/ember/emberd.json "$work/control/conffiles" || fail "the config is not a conffile"
grep -q '^Depends:.*adduser' "$work/control/control" || fail "Depends lacks adduser"
grep -q '^Depends:.*libseccomp2' "$work/control/control" || fail "Depends lacks libseccomp2"
for s in postinst prerm postrm; do
  [ -x "$work/control/$s" ] || fail "$s is missing or not executable"
  sh -n "$work/control/$s" || fail "$s does not parse"
done
grep -q 'ExecStart=/usr/bin/emberd --config /etc/ember/emberd.json' \
  <(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/lib/systemd/system/emberd.service) \
  || fail "the packaged unit does not start /usr/bin/emberd"
if dpkg-deb --fsys-tarfile "$deb" | tar -t | grep -q 'systemd/system/multi-user.target.wants'; then
  fail "the package enables the service"
fi

step "the unpacked package serves a function"
root="$work/root"
dpkg -x "$deb" "$root"
insecure=()
[ "$(id -u)" -eq 0 ] || insecure=(--insecure)
"$root/usr/bin/emberd" --listen 127.0.0.1:0 --state-dir "$work/state" --socket "" \
  --deploy "$src/examples/functions" "${insecure[@]}" >"$work/emberd.log" 2>&1 &
daemon_pid=$!
port=""
for _ in $(seq 1 300); do
  port="$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/emberd.log")"
  [ -n "$port" ] && break
  kill -0 "$daemon_pid" 2>/dev/null || break
  sleep 0.05
done
[ -n "$port" ] || fail "the packaged emberd did not start: $(tail -5 "$work/emberd.log")"
grep -q "runtimes in $root/usr/share/ember/runtimes" "$work/emberd.log" \
  || fail "the packaged emberd does not use its own runtimes: $(grep 'runtimes in' "$work/emberd.log")"
body="$(curl -sf -X POST -d '{"name":"deb"}' "http://127.0.0.1:$port/v1/functions/hello-py/invoke")" \
  || fail "the packaged emberd did not answer: $(tail -5 "$work/emberd.log")"
grep -q deb <<<"$body" || fail "unexpected answer: $body"
# The packaged command line reaches the packaged daemon over TCP with the admin token.
body="$(EMBER_URL="http://127.0.0.1:$port" EMBER_TOKEN="$(cat "$work/state/admin.token")" \
  "$root/usr/bin/ember" invoke hello-py --data '{"name":"cli"}')" \
  || fail "ember invoke failed: $body"
grep -q cli <<<"$body" || fail "ember invoke answered $body"
# The page-view example counts on context.kv: 1, then 2.
for want in 1 2; do
  body="$(curl -sf -X POST "http://127.0.0.1:$port/v1/functions/pv/invoke")" \
    || fail "pv did not answer: $(tail -5 "$work/emberd.log")"
  grep -q "\"views\":$want," <<<"$body" || fail "pv answered $body, not views $want"
done
kill -TERM "$daemon_pid"
wait "$daemon_pid" || fail "the packaged emberd did not exit cleanly"
daemon_pid=""

step "maintainer scripts over a copy of /etc"
if [ "$(id -u)" -ne 0 ] || ! unshare --mount true 2>/dev/null; then
  echo "SKIP: running the maintainer scripts needs root and mount namespaces"
  exit 77
fi
cp -a /etc "$work/etc"
mkdir "$work/varlib"
unshare --mount bash -euo pipefail -c '
  mount --make-rprivate /
  mount --bind "$1/etc" /etc
  mount --bind "$1/varlib" /var/lib
  scripts="$2"
  ! getent passwd ember >/dev/null || { echo "FAIL: the copy of /etc already has ember"; exit 1; }
  "$scripts/postinst" configure
  "$scripts/postinst" configure
  uid="$(getent passwd ember | cut -d: -f3)"
  group="$(id -gn ember)"
  [ -n "$uid" ] && [ "$uid" -lt 1000 ] || { echo "FAIL: ember is not a system user ($uid)"; exit 1; }
  [ "$group" = ember ] || { echo "FAIL: the primary group of ember is $group"; exit 1; }
  [ "$(getent passwd ember | cut -d: -f7)" = /usr/sbin/nologin ] || { echo "FAIL: ember has a login shell"; exit 1; }
  mkdir -p /var/lib/ember/functions
  "$scripts/postrm" remove
  [ -d /var/lib/ember ] && getent passwd ember >/dev/null || { echo "FAIL: remove dropped state or user"; exit 1; }
  "$scripts/postrm" purge
  [ ! -e /var/lib/ember ] || { echo "FAIL: purge kept /var/lib/ember"; exit 1; }
  ! getent passwd ember >/dev/null && ! getent group ember >/dev/null \
    || { echo "FAIL: purge kept the user or the group"; exit 1; }
' check "$work" "$work/control" || fail "maintainer scripts"
getent passwd ember >/dev/null && fail "the host's /etc was changed"
echo "package checks passed"
