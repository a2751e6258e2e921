#!/usr/bin/env bash
# Scripted device authorization grant (RFC 8628) against idp.mjs, as `jit login` does it, with the
# approval in the "browser" done by curl. Usage: ./device_flow.sh [login]
# env: IDP=http://127.0.0.1:4000 SCOPE="openid profile offline_access access" RESOURCE=api://other-app (optional)
# Prints the decoded access token payload. Needs curl, jq.
set -euo pipefail
IDP=${IDP:-http://127.0.0.1:4000}
LOGIN=${1:-bob}
SCOPE=${SCOPE:-openid profile offline_access access}
JAR=$(mktemp); PAGE=$(mktemp); trap 'rm -f "$JAR" "$PAGE"' EXIT
jwtpayload() { cut -d. -f2 | tr '_-' '/+' | awk '{l=length($0)%4; if(l==2)$0=$0"=="; else if(l==3)$0=$0"="; print}' | base64 -d; }
poll() { curl -s -d grant_type=urn:ietf:params:oauth:grant-type:device_code -d client_id=jit-cli -d "device_code=$1" "$IDP/token"; }

DEV=$(curl -s -d client_id=jit-cli --data-urlencode "scope=$SCOPE" ${RESOURCE:+--data-urlencode "resource=$RESOURCE"} "$IDP/device/auth")
DEVICE_CODE=$(echo "$DEV" | jq -r .device_code)
poll "$DEVICE_CODE" | jq -c .    # authorization_pending

curl -s -c "$JAR" -b "$JAR" -o "$PAGE" "$(echo "$DEV" | jq -r .verification_uri_complete)"
XSRF=$(sed -nE 's/.*name="xsrf" value="([^"]+)".*/\1/p' "$PAGE")
LOC=$(curl -s -c "$JAR" -b "$JAR" -o /dev/null -w '%{redirect_url}' -d "xsrf=$XSRF" \
      -d "user_code=$(echo "$DEV" | jq -r .user_code)" -d confirm=yes "$IDP/device")
for _ in 1 2 3 4 5 6; do
  case "$LOC" in
    */interaction/*)
      if curl -s -c "$JAR" -b "$JAR" "$LOC" | grep -q 'name="login"'; then
        LOC=$(curl -s -c "$JAR" -b "$JAR" -o /dev/null -w '%{redirect_url}' --data-urlencode prompt=login \
              --data-urlencode "login=$LOGIN" --data-urlencode password=x "$LOC")
      else
        LOC=$(curl -s -c "$JAR" -b "$JAR" -o /dev/null -w '%{redirect_url}' --data-urlencode prompt=consent "$LOC")
      fi;;
    "") break;;
    *) LOC=$(curl -s -c "$JAR" -b "$JAR" -o "$PAGE" -w '%{redirect_url}' "$LOC");;
  esac
done
grep -o '<h1>[^<]*</h1>' "$PAGE" || true

TOK=$(poll "$DEVICE_CODE")
echo "$TOK" | jq '{token_type, expires_in, scope, has_refresh: (.refresh_token != null)}'
echo "access_token payload:"; echo "$TOK" | jq -r .access_token | jwtpayload | jq .
