#!/usr/bin/env bash
# The "browser" half of an OAuth 2.0 device authorization grant against the test IdP
# (tests/peers/idp, npm `oidc-provider` with devInteractions): open the verification page,
# confirm (or abort) the user code, then sign in with any password.
# Adapted from the peer recipe's device_flow.sh; needs curl only.
#
#   approve_device.sh ISSUER VERIFICATION_URI_COMPLETE USER_CODE LOGIN [confirm|abort]
set -euo pipefail
IDP=$1 PAGE_URL=$2 USER_CODE=$3 LOGIN=$4 ACTION=${5:-confirm}
JAR=$(mktemp); PAGE=$(mktemp); trap 'rm -f "$JAR" "$PAGE"' EXIT
c() { curl -sS --max-time 10 -c "$JAR" -b "$JAR" "$@"; }

c -o "$PAGE" "$PAGE_URL"
XSRF=$(sed -nE 's/.*name="xsrf" value="([^"]+)".*/\1/p' "$PAGE" | head -n1)
[ -n "$XSRF" ] || { echo "no xsrf field on $PAGE_URL" >&2; exit 1; }
if [ "$ACTION" = abort ]; then
  c -o /dev/null -d "xsrf=$XSRF" -d "user_code=$USER_CODE" -d abort=yes "$IDP/device"
  exit 0
fi
LOC=$(c -o /dev/null -w '%{redirect_url}' -d "xsrf=$XSRF" -d "user_code=$USER_CODE" -d confirm=yes "$IDP/device")
for _ in 1 2 3 4 5 6 7 8; do
  case "$LOC" in
    "") exit 0 ;;
    */interaction/*)
      # Into a file first: `curl | grep -q` fails under pipefail when grep stops reading early.
      c -o "$PAGE" "$LOC"
      if grep -q 'name="login"' "$PAGE"; then
        LOC=$(c -o /dev/null -w '%{redirect_url}' --data-urlencode prompt=login \
              --data-urlencode "login=$LOGIN" --data-urlencode password=x "$LOC")
      else
        LOC=$(c -o /dev/null -w '%{redirect_url}' --data-urlencode prompt=consent "$LOC")
      fi ;;
    *) LOC=$(c -o "$PAGE" -w '%{redirect_url}' "$LOC") ;;
  esac
done
echo "sign-in did not finish for $LOGIN" >&2
exit 1
