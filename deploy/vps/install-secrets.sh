#!/bin/sh
# Runs on the VPS (deploy/vps/deploy.sh pipes a tar of the secrets into it):
#   install-secrets.sh DIR NAME:UID...
# Puts each secret in DIR (0700) with mode 0400, owned by UID, the user its container runs
# as (Compose file secrets are bind mounts: the owner here is the owner in the container).
# Without root or passwordless sudo it cannot chown: mode 0444 inside the 0700 folder, said
# on stderr. Never prints a secret.
set -eu
dir=$1
shift
umask 077
mkdir -p "$dir"
chmod 700 "$dir"
tmp=$(mktemp -d "$dir/.incoming.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tar -xf - -C "$tmp" --no-same-owner
if [ "$(id -u)" = 0 ]; then
  own="chown"
elif sudo -n true 2>/dev/null; then
  own="sudo -n chown"
else
  own=""
fi
for pair in "$@"; do
  name=${pair%%:*}
  uid=${pair#*:}
  [ -s "$tmp/$name" ] || { echo "install-secrets: $name missing or empty in the upload" >&2; exit 1; }
  if [ -n "$own" ]; then
    chmod 0400 "$tmp/$name"
    $own "$uid:$uid" "$tmp/$name"
  else
    chmod 0444 "$tmp/$name"
  fi
  mv -f "$tmp/$name" "$dir/$name"
done
[ -n "$own" ] || echo "install-secrets: not root and no passwordless sudo: the secrets are mode 0444 inside the 0700 folder $dir" >&2
