#!/usr/bin/env bash
# Scripted authorization code + PKCE sign-in against idp.mjs with curl only (for looking at tokens by hand).
# Usage: ./login_code_flow.sh [login]    env: IDP=http://127.0.0.1:4000 REDIRECT=http://127.0.0.1:3000/auth/callback
# Prints the token response and the decoded ID token / access token payloads. Needs curl, jq, openssl.
set -euo pipefail
IDP=${IDP:-http://127.0.0.1:4000}
LOGIN=${1:-alice}
REDIRECT=${REDIRECT:-http://127.0.0.1:3000/auth/callback}
SCOPE=${SCOPE:-openid email profile groups offline_access access}
JAR=$(mktemp); trap 'rm -f "$JAR"' EXIT
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
jwtpayload() { cut -d. -f2 | tr '_-' '/+' | awk '{l=length($0)%4; if(l==2)$0=$0"=="; else if(l==3)$0=$0"="; print}' | base64 -d; }
VERIFIER=$(openssl rand 48 | b64url)
CHALLENGE=$(printf '%s' "$VERIFIER" | openssl dgst -sha256 -binary | b64url)
STATE=$(openssl rand -hex 8); NONCE=$(openssl rand -hex 8)
enc() { printf %s "$1" | jq -sRr @uri; }

# /auth -> /interaction/<uid> (login form, any login and password) -> (consent when offline_access) -> redirect_uri?code=
LOC=$(curl -s -c "$JAR" -b "$JAR" -o /dev/null -w '%{redirect_url}' \
  "$IDP/auth?client_id=jit-web&response_type=code&scope=$(enc "$SCOPE")&redirect_uri=$(enc "$REDIRECT")&state=$STATE&nonce=$NONCE&code_challenge=$CHALLENGE&code_challenge_method=S256&prompt=consent")
for _ in 1 2 3 4 5 6; do
  case "$LOC" in
    "$REDIRECT"*) break;;
    */interaction/*)
      if curl -s -c "$JAR" -b "$JAR" "$LOC" | grep -q 'name="login"'; then
        LOC=$(curl -s -c "$JAR" -b "$JAR" -o /dev/null -w '%{redirect_url}' --data-urlencode prompt=login \
              --data-urlencode "login=$LOGIN" --data-urlencode password=x "$LOC")
      else
        LOC=$(curl -s -c "$JAR" -b "$JAR" -o /dev/null -w '%{redirect_url}' --data-urlencode prompt=consent "$LOC")
      fi;;
    *) LOC=$(curl -s -c "$JAR" -b "$JAR" -o /dev/null -w '%{redirect_url}' "$LOC");;
  esac
done
case "$LOC" in "$REDIRECT"*) ;; *) echo "did not reach the redirect URI: $LOC" >&2; exit 1;; esac
CODE=$(printf '%s' "$LOC" | sed -E 's/.*[?&]code=([^&]+).*/\1/')
[ "$(printf '%s' "$LOC" | sed -E 's/.*[?&]state=([^&]+).*/\1/')" = "$STATE" ] || { echo "state mismatch" >&2; exit 1; }

TOK=$(curl -s -u jit-web:jit-web-secret -d grant_type=authorization_code -d "code=$CODE" \
      --data-urlencode "redirect_uri=$REDIRECT" -d "code_verifier=$VERIFIER" "$IDP/token")
echo "$TOK" | jq .
echo "id_token payload:"; echo "$TOK" | jq -r .id_token | jwtpayload | jq .
echo "access_token payload:"; echo "$TOK" | jq -r .access_token | jwtpayload | jq .
