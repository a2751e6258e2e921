//! Forged and misused bearer tokens, each refused for its reason; JWKS refetch limits.

use super::browser::*;
use super::stub::*;
use super::*;

struct Case {
    class: &'static str,
    name: String,
    token: String,
    /// A fragment of the internal reason: refused, and for this reason.
    expect: &'static str,
}

fn case(class: &'static str, name: impl Into<String>, token: String, expect: &'static str) -> Case {
    Case {
        class,
        name: name.into(),
        token,
        expect,
    }
}

async fn check_refused(identity: &Identity, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        match identity.bearer.validate(&c.token).await {
            Ok(user) => failures.push(format!("{}/{}: accepted as {}", c.class, c.name, user.key)),
            Err(e) => {
                if e.kind() != AuthErrorKind::InvalidToken || e.status() != 401 {
                    failures.push(format!(
                        "{}/{}: {:?} {}",
                        c.class,
                        c.name,
                        e.kind(),
                        e.reason()
                    ));
                }
                if !e.reason().contains(c.expect) {
                    failures.push(format!(
                        "{}/{}: refused for {:?}, expected {:?}",
                        c.class,
                        c.name,
                        e.reason(),
                        c.expect
                    ));
                }
                let signature = c.token.rsplit('.').next().unwrap_or_default();
                if (signature.len() > 16 && e.reason().contains(signature))
                    || e.to_string() != "the access token is invalid or expired"
                {
                    failures.push(format!(
                        "{}/{}: message leaks: {}",
                        c.class,
                        c.name,
                        e.reason()
                    ));
                }
            }
        }
    }
    failures
}

/// The same cases against a running broker that trusts `identity`: `GET /api/v1/me` answers
/// 401 with the documented error body, sets no cookie (no session), and the genuine token passes.
async fn check_refused_over_http(
    identity: Identity,
    genuine_token: &str,
    cases: &[&Case],
) -> Vec<String> {
    use crate::support::server::{Engine, start_with_auth};
    let broker = start_with_auth(
        Engine::Sqlite,
        jit_server::http::AuthMode::Oidc(Arc::new(identity)),
        jit_server::providers::Providers::simulated(),
        |_| {},
    )
    .await;
    let me = format!("{}/api/v1/me", broker.url);
    let ok = broker
        .http
        .get(&me)
        .bearer_auth(genuine_token)
        .send()
        .await
        .unwrap();
    let mut failures = Vec::new();
    if ok.status() != 200 {
        failures.push(format!("genuine token refused over HTTP: {}", ok.status()));
    }
    for c in cases {
        // A token that is not even a valid header value never reaches a server.
        if reqwest::header::HeaderValue::from_str(&format!("Bearer {}", c.token)).is_err() {
            continue;
        }
        let res = broker
            .http
            .get(&me)
            .bearer_auth(&c.token)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let cookie = res.headers().contains_key("set-cookie");
        let body: Value = res.json().await.unwrap_or(Value::Null);
        // A token larger than the server takes in headers is refused before any handler runs.
        let too_large = status == 431;
        if !too_large && (status != 401 || body["error"]["code"] != "unauthorized") || cookie {
            failures.push(format!(
                "{}/{}: over HTTP {status} {body} cookie={cookie}",
                c.class, c.name
            ));
        }
    }
    failures
}

/// Genuine tokens from the real provider: one good, the rest misused.
struct Genuine {
    good: Value,
    other_resource: Value,
    no_scope: Value,
    other_tenant: Value,
    web_id_token: String,
    idp_jwk: Value,
}

async fn genuine(real: &Identity, redirect: &str) -> Genuine {
    let issuer = idp();
    let (good, other_resource, no_scope, other_tenant) = tokio::join!(
        device_tokens("carol", "openid profile access", None),
        device_tokens("carol", "openid profile access", Some("api://other-app")),
        device_tokens("carol", "openid profile", None),
        device_tokens("eve", "openid profile access", None),
    );
    let genuine = access_token(&good);
    real.bearer
        .validate(&genuine)
        .await
        .unwrap_or_else(|e| panic!("the genuine token must pass: {}", e.reason()));
    let (url, state) = real.oidc.begin("/", None);
    let walk = Browser::new().sign_in(&url, redirect, "mallory").await;
    let (code, returned) = callback(&walk.end);
    let web_id_token = real
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap()
        .id_token
        .expose()
        .to_owned();
    let idp_jwk = reqwest::get(format!("{issuer}/jwks"))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["keys"][0]
        .clone();

    Genuine {
        good,
        other_resource,
        no_scope,
        other_tenant,
        web_id_token,
        idp_jwk,
    }
}

fn parts(token: &str) -> [&str; 3] {
    token.split('.').collect::<Vec<_>>().try_into().unwrap()
}

/// `none`, HMAC key confusion, unknown and injected `kid`s, headers carrying or pointing at keys.
#[expect(clippy::too_many_lines, reason = "a table of attack cases")]
fn header_cases(g: &Genuine, evil: &str) -> Vec<Case> {
    let k = keys();
    let genuine = access_token(&g.good);
    let [_, g_payload, g_sig] = parts(&genuine);
    let g_claims = payload_of(&genuine);
    let idp_jwk = &g.idp_jwk;
    let mut real_cases = Vec::new();
    // 1. alg none
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": alg, "typ": "at+jwt", "kid": IDP_KID});
        real_cases.push(case(
            "alg-none",
            format!("{alg}+sig"),
            raw(&h, &g_claims, g_sig),
            "not allowed",
        ));
        real_cases.push(case(
            "alg-none",
            format!("{alg}-unsigned"),
            format!("{}.{}.", b64json(&h), g_payload),
            "empty part",
        ));
    }
    // 2. HMAC signed with the provider's public key as the secret
    for (form, secret) in public_key_forms(idp_jwk) {
        real_cases.push(case(
            "hmac-confusion",
            format!("HS256/{form}"),
            hmac_token(Algorithm::HS256, IDP_KID, &g_claims, &secret),
            "not allowed",
        ));
    }
    let spki = &public_key_forms(idp_jwk)[0].1;
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        real_cases.push(case(
            "hmac-confusion",
            format!("{alg:?}/spki-pem"),
            hmac_token(alg, IDP_KID, &g_claims, spki),
            "not allowed",
        ));
    }
    // 3. unknown, missing, empty kid
    real_cases.push(case(
        "unknown-kid",
        "no-such-key",
        sign(&k.attacker.with_kid("no-such-key"), &g_claims, |_| {}),
        "unknown signing key",
    ));
    real_cases.push(case(
        "unknown-kid",
        "missing",
        sign(&k.attacker, &g_claims, |h| h.kid = None),
        "no `kid`",
    ));
    real_cases.push(case(
        "unknown-kid",
        "empty",
        sign(&k.attacker, &g_claims, |h| h.kid = Some(String::new())),
        "no `kid`",
    ));
    // 4. kid injection
    for kid in [
        "../../../../../../dev/null",
        "/etc/passwd",
        "' OR '1'='1",
        "test-rs256-1' --",
        "test-rs256-1\u{0}",
        "test-rs256-1 ",
        &"k".repeat(300),
    ] {
        real_cases.push(case(
            "kid-injection",
            format!("{kid:.20?}"),
            sign(&k.attacker.with_kid(kid), &g_claims, |_| {}),
            "unknown signing key",
        ));
    }
    real_cases.push(case(
        "kid-injection",
        "kid-number",
        raw(&json!({"alg": "RS256", "kid": 1}), &g_claims, g_sig),
        "`kid` is not a string",
    ));
    // 5. headers that carry or point at keys (the attacker's key is served at `evil`)
    let attacker_same_kid = k.attacker.with_kid(IDP_KID);
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(k.attacker.jwk.clone()).unwrap();
    real_cases.push(case(
        "key-headers",
        "jku",
        sign(&attacker_same_kid, &g_claims, |h| {
            h.jku = Some(format!("{evil}/jwks"));
        }),
        "`jku`",
    ));
    real_cases.push(case(
        "key-headers",
        "x5u",
        sign(&attacker_same_kid, &g_claims, |h| {
            h.x5u = Some(format!("{evil}/cert.pem"));
        }),
        "`x5u`",
    ));
    real_cases.push(case(
        "key-headers",
        "jwk",
        sign(&attacker_same_kid, &g_claims, |h| h.jwk = Some(jwk.clone())),
        "`jwk`",
    ));
    real_cases.push(case(
        "key-headers",
        "x5c",
        sign(&attacker_same_kid, &g_claims, |h| {
            h.x5c = Some(vec!["MIIBIjANBgkq".to_owned()]);
        }),
        "`x5c`",
    ));
    real_cases
}

/// Stripped, altered and foreign signatures; genuine tokens used where they do not belong.
fn signature_and_misuse_cases(g: &Genuine) -> Vec<Case> {
    let k = keys();
    let genuine = access_token(&g.good);
    let [g_header, g_payload, g_sig] = parts(&genuine);
    let g_claims = payload_of(&genuine);
    let attacker_same_kid = k.attacker.with_kid(IDP_KID);
    let Genuine {
        good,
        other_resource,
        no_scope,
        other_tenant,
        web_id_token,
        ..
    } = g;
    let web_id_token = web_id_token.clone();
    let mut real_cases = Vec::new();
    // 6. stripped or altered signature
    let mut flipped = g_sig.to_owned().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let mut altered = g_claims.clone();
    altered["oid"] = json!(oid_for("alice"));
    altered["groups"] = json!(["grp-prod-admins"]);
    let other_sig = access_token(other_resource)
        .rsplit('.')
        .next()
        .unwrap()
        .to_owned();
    for (name, token, expect) in [
        ("stripped", format!("{g_header}.{g_payload}."), "empty part"),
        ("stripped-dot", format!("{g_header}.{g_payload}"), "2 parts"),
        (
            "flipped",
            format!(
                "{g_header}.{g_payload}.{}",
                String::from_utf8(flipped).unwrap()
            ),
            "signature",
        ),
        (
            "truncated",
            format!("{g_header}.{g_payload}.{}", &g_sig[..g_sig.len() / 2]),
            "signature",
        ),
        (
            "other-token-sig",
            format!("{g_header}.{g_payload}.{other_sig}"),
            "signature",
        ),
        (
            "payload-altered",
            format!("{g_header}.{}.{g_sig}", b64json(&altered)),
            "signature",
        ),
    ] {
        real_cases.push(case("bad-signature", name, token, expect));
    }
    // 7. another key under the provider's kid
    real_cases.push(case(
        "same-kid-other-key",
        "rs256",
        sign(&attacker_same_kid, &g_claims, |_| {}),
        "signature",
    ));
    real_cases.push(case(
        "same-kid-other-key",
        "es256",
        sign(&k.ec.with_kid(IDP_KID), &g_claims, |_| {}),
        "is not the one of key",
    ));
    // 8. genuine tokens used where they do not belong
    real_cases.push(case(
        "id-token-as-access-token",
        "web-id-token",
        web_id_token,
        "web client",
    ));
    real_cases.push(case(
        "id-token-as-access-token",
        "cli-id-token",
        good["id_token"].as_str().unwrap().to_owned(),
        "audience",
    ));
    real_cases.push(case(
        "other-resource",
        "api://other-app",
        access_token(other_resource),
        "audience",
    ));
    real_cases.push(case(
        "missing-scope",
        "no-access-scope",
        access_token(no_scope),
        "scope `access`",
    ));
    real_cases.push(case(
        "other-tenant",
        "eve",
        access_token(other_tenant),
        "tenant",
    ));
    real_cases
}

/// Tokens that are not JWS compact serialisations, or barely.
fn malformed_cases(g: &Genuine) -> Vec<Case> {
    let genuine = access_token(&g.good);
    let [g_header, g_payload, g_sig] = parts(&genuine);
    let mut real_cases = Vec::new();
    // 9. malformed
    for (name, token, expect) in [
        ("empty", String::new(), "1 parts"),
        ("one-part", "abc".to_owned(), "1 parts"),
        ("two-parts", format!("{g_header}.{g_payload}"), "2 parts"),
        ("four-parts", format!("{genuine}.{g_sig}"), "4 parts"),
        ("jwe-five-parts", format!("{g_header}.a.b.c.d"), "5 parts"),
        (
            "bad-base64",
            format!("{g_header}.{g_payload}!.{g_sig}"),
            "base64url",
        ),
        (
            "padded-base64",
            format!("{g_header}=.{g_payload}.{g_sig}"),
            "base64url",
        ),
        ("bearer-prefix", format!("Bearer {genuine}"), "base64url"),
        (
            "newline",
            format!("{g_header}.{g_payload}\n.{g_sig}"),
            "base64url",
        ),
        (
            "header-garbage",
            format!("{}.{g_payload}.{g_sig}", b64("{alg:")),
            "JSON object",
        ),
        (
            "header-array",
            format!("{}.{g_payload}.{g_sig}", b64("[\"RS256\"]")),
            "JSON object",
        ),
        (
            "header-not-base64-json",
            format!("{}.{g_payload}.{g_sig}", b64([0xff, 0xfe])),
            "JSON object",
        ),
        (
            "payload-garbage",
            format!("{g_header}.{}.{g_sig}", b64("not json")),
            "payload: not a JSON object",
        ),
        (
            "huge",
            format!("{g_header}.{}.{g_sig}", "A".repeat(1 << 20)),
            "longer than",
        ),
    ] {
        real_cases.push(case("malformed", name, token, expect));
    }

    real_cases
}

/// Valid tokens next to each limit pass: the refusals below are for the reasons they name.
async fn stub_positive_controls(stub_id: &Identity, stub: &Stub, clock: &ManualClock) {
    let k = keys();
    let valid = sign(&k.stub, &stub_claims(stub, clock, &json!({})), |_| {});
    let accepted = stub_id
        .bearer
        .validate(&valid)
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason()));
    assert_eq!(
        accepted.key,
        format!("{TENANT}/00000000-0000-0000-0000-00000000a11c")
    );
    let now = clock.now().unix_timestamp();
    // positive controls next to the limits
    for patch in [
        json!({"exp": now - 30}),
        json!({"nbf": now + 30}),
        json!({"aud": ["api://other-app", API]}),
        json!({"scp": null, "scope": "openid access"}),
        json!({"scp": "User.Read access"}),
        json!({"nbf": null, "iat": null}),
    ] {
        let token = sign(&k.stub, &stub_claims(stub, clock, &patch), |_| {});
        stub_id
            .bearer
            .validate(&token)
            .await
            .unwrap_or_else(|e| panic!("{patch} must pass: {}", e.reason()));
    }
    let es = sign(&k.ec, &stub_claims(stub, clock, &json!({})), |_| {});
    stub_id.bearer.validate(&es).await.unwrap();
}

/// Claim-level forgeries, signed by the stub issuer's own (trusted) key.
#[expect(clippy::too_many_lines, reason = "a table of attack cases")]
fn stub_claim_cases(stub: &Stub, clock: &ManualClock) -> Vec<Case> {
    let k = keys();
    let issuer = idp();
    let now = clock.now().unix_timestamp();
    let forged = |patch: Value| sign(&k.stub, &stub_claims(stub, clock, &patch), |_| {});
    let mut stub_cases = Vec::new();
    for (class, name, patch, expect) in [
        (
            "expired",
            "an-hour-ago",
            json!({"exp": now - 3600}),
            "expired",
        ),
        (
            "expired",
            "past-leeway",
            json!({"exp": now - 61}),
            "expired",
        ),
        ("expired", "no-exp", json!({"exp": null}), "no `exp`"),
        (
            "expired",
            "exp-string",
            json!({"exp": (now + 600).to_string()}),
            "not a number",
        ),
        (
            "not-yet-valid",
            "nbf-hour",
            json!({"nbf": now + 3600}),
            "not valid yet",
        ),
        (
            "not-yet-valid",
            "nbf-past-leeway",
            json!({"nbf": now + 120}),
            "not valid yet",
        ),
        (
            "issued-in-future",
            "iat-hour",
            json!({"iat": now + 3600}),
            "future",
        ),
        (
            "wrong-issuer",
            "entra",
            json!({"iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0")}),
            "issuer",
        ),
        (
            "wrong-issuer",
            "trailing-slash",
            json!({"iss": format!("{}/", stub.url)}),
            "issuer",
        ),
        (
            "wrong-issuer",
            "upper-case",
            json!({"iss": stub.url.to_uppercase()}),
            "issuer",
        ),
        ("wrong-issuer", "real-idp", json!({"iss": issuer}), "issuer"),
        ("wrong-issuer", "missing", json!({"iss": null}), "no `iss`"),
        (
            "wrong-audience",
            "other-api",
            json!({"aud": "api://other-app"}),
            "audience",
        ),
        (
            "wrong-audience",
            "other-list",
            json!({"aud": ["api://other-app", "api://x"]}),
            "audience",
        ),
        (
            "wrong-audience",
            "missing",
            json!({"aud": null}),
            "no `aud`",
        ),
        (
            "wrong-audience",
            "empty",
            json!({"aud": ""}),
            "no usable `aud`",
        ),
        (
            "wrong-audience",
            "number",
            json!({"aud": 42}),
            "`aud` is not a string or an array of strings",
        ),
        (
            "wrong-audience",
            "prefix",
            json!({"aud": "api://jit-broker-evil"}),
            "audience",
        ),
        (
            "id-token-as-access-token",
            "aud-web-client",
            json!({"aud": "jit-web"}),
            "web client",
        ),
        (
            "id-token-as-access-token",
            "aud-both",
            json!({"aud": [API, "jit-web"]}),
            "web client",
        ),
        (
            "id-token-as-access-token",
            "nonce",
            json!({"nonce": "n-0123"}),
            "`nonce`",
        ),
        (
            "id-token-as-access-token",
            "at_hash",
            json!({"at_hash": "x"}),
            "`at_hash`",
        ),
        (
            "other-tenant",
            "other-tid",
            json!({"tid": OTHER_TENANT}),
            "tenant",
        ),
        ("other-tenant", "no-tid", json!({"tid": null}), "no `tid`"),
        (
            "missing-scope",
            "other-scope",
            json!({"scp": "User.Read"}),
            "scope `access`",
        ),
        (
            "missing-scope",
            "superstring",
            json!({"scp": "accessible"}),
            "scope `access`",
        ),
        (
            "missing-scope",
            "none",
            json!({"scp": null}),
            "scope `access`",
        ),
        (
            "missing-scope",
            "empty",
            json!({"scp": ""}),
            "scope `access`",
        ),
        (
            "app-only",
            "idtyp-app",
            json!({"idtyp": "app", "scp": null, "roles": ["x"]}),
            "app-only",
        ),
        (
            "app-only",
            "idtyp-app-with-scp",
            json!({"idtyp": "app"}),
            "app-only",
        ),
        ("no-subject", "no-oid", json!({"oid": null}), "no `oid`"),
    ] {
        stub_cases.push(case(class, name, forged(patch), expect));
    }
    stub_cases
}

/// What the provider itself could sign by mistake or misconfiguration, so signed with the stub
/// issuer's trusted key: members named twice, claims of the wrong type, expiries far away,
/// tenants other than the pinned one, tokens of another type.
#[expect(clippy::too_many_lines, reason = "a table of attack cases")]
fn stub_strict_cases(stub: &Stub, clock: &ManualClock) -> Vec<Case> {
    let k = keys();
    let now = clock.now().unix_timestamp();
    let forged = |patch: Value| sign(&k.stub, &stub_claims(stub, clock, &patch), |_| {});
    let base = stub_claims(stub, clock, &json!({})).to_string();
    // the payload text with raw members appended: the second of a name serde_json would keep
    let with = |extra: &str| format!("{},{extra}}}", &base[..base.len() - 1]);
    let header = format!(r#"{{"alg":"RS256","typ":"at+jwt","kid":"{}"}}"#, k.stub.kid);
    let mut cases = Vec::new();
    for (name, header, payload) in [
        (
            "oid-twice",
            header.clone(),
            with(r#""oid":"00000000-0000-0000-0000-0000000000b0""#),
        ),
        (
            "groups-twice",
            header.clone(),
            with(r#""groups":["grp-jit-admins"]"#),
        ),
        (
            "tid-twice",
            header.clone(),
            with(&format!(r#""tid":"{OTHER_TENANT}""#)),
        ),
        ("escaped-name", header.clone(), with(r#""\u006fid":"x""#)),
        (
            "nested",
            header.clone(),
            with(r#""_claim_sources":{"src1":{"endpoint":"https://a","endpoint":"https://b"}}"#),
        ),
        ("in-array", header.clone(), with(r#""x":[{"a":1,"a":2}]"#)),
        (
            "header-kid-twice",
            format!(r#"{{"alg":"RS256","kid":"{}","kid":"other"}}"#, k.stub.kid),
            base.clone(),
        ),
        (
            "header-alg-twice",
            format!(r#"{{"alg":"RS256","alg":"none","kid":"{}"}}"#, k.stub.kid),
            base.clone(),
        ),
    ] {
        cases.push(case(
            "duplicate-members",
            name,
            sign_text(&k.stub, &header, &payload),
            "appears twice",
        ));
    }
    for (class, name, patch, expect) in [
        (
            "wrong-types",
            "groups-string",
            json!({"groups": "grp-prod-admins"}),
            "`groups` is not an array of strings",
        ),
        (
            "wrong-types",
            "groups-mixed",
            json!({"groups": ["grp-prod-admins", 7]}),
            "`groups` is not an array of strings",
        ),
        (
            "wrong-types",
            "groups-object",
            json!({"groups": {"0": "grp-prod-admins"}}),
            "`groups` is not an array of strings",
        ),
        (
            "wrong-types",
            "roles-string",
            json!({"roles": "jit.admin"}),
            "`roles` is not an array of strings",
        ),
        (
            "wrong-types",
            "scope-array",
            json!({"scp": null, "scope": ["access"]}),
            "`scope` is not a string",
        ),
        (
            "wrong-types",
            "scp-array",
            json!({"scp": ["access"]}),
            "`scp` is not a string",
        ),
        (
            "wrong-types",
            "oid-number",
            json!({"oid": 42}),
            "`oid` is not a string",
        ),
        (
            "wrong-types",
            "tid-array",
            json!({"tid": [TENANT]}),
            "`tid` is not a string",
        ),
        (
            "wrong-types",
            "acrs-string",
            json!({"acrs": "c1"}),
            "`acrs` is not an array of strings",
        ),
        (
            "wrong-types",
            "amr-string",
            json!({"amr": "mfa"}),
            "`amr` is not an array of strings",
        ),
        (
            "wrong-types",
            "iss-array",
            json!({"iss": [stub.url]}),
            "`iss` is not a string",
        ),
        (
            "wrong-types",
            "aud-mixed",
            json!({"aud": [API, 1]}),
            "`aud` is not a string or an array",
        ),
        (
            "wrong-types",
            "nbf-string",
            json!({"nbf": "0"}),
            "`nbf` is not a number",
        ),
        (
            "wrong-types",
            "iat-bool",
            json!({"iat": true}),
            "`iat` is not a number",
        ),
        (
            "wrong-types",
            "auth_time-string",
            json!({"auth_time": "now"}),
            "`auth_time` is not a number",
        ),
        (
            "wrong-types",
            "idtyp-number",
            json!({"idtyp": 0}),
            "`idtyp` is not a string",
        ),
        (
            "wrong-types",
            "name-object",
            json!({"name": {"first": "A"}}),
            "`name` is not a string",
        ),
        (
            "absurd-exp",
            "1e300",
            json!({"exp": 1e300}),
            "`exp` is not a time",
        ),
        (
            "absurd-exp",
            "u64-max",
            json!({"exp": u64::MAX}),
            "`exp` is not a time",
        ),
        (
            "absurd-exp",
            "year-9999",
            json!({"exp": 253_402_300_799_i64}),
            "longest token lifetime",
        ),
        (
            "absurd-exp",
            "25h-after-iat",
            json!({"exp": now + 25 * 3600, "iat": now}),
            "longest token lifetime",
        ),
        (
            "absurd-exp",
            "25h-without-iat",
            json!({"exp": now + 25 * 3600, "iat": null}),
            "longest token lifetime",
        ),
        (
            "absurd-exp",
            "issued-a-month-ago",
            json!({"iat": now - 30 * 86_400, "exp": now + 600}),
            "longest token lifetime",
        ),
        (
            "any-tenant",
            "random-tenant",
            json!({"tid": "0c2b8e1a-9d3f-4a55-8e2d-2f6b7e9a1c3d"}),
            "not the pinned tenant",
        ),
        (
            "any-tenant",
            "other-tenant-upper-case",
            json!({"tid": OTHER_TENANT.to_uppercase()}),
            "not the pinned tenant",
        ),
        (
            "any-tenant",
            "consumers-tenant",
            json!({"tid": "9188040d-6c67-4c5b-b112-36a304b66dad"}),
            "not the pinned tenant",
        ),
        (
            "any-tenant",
            "common",
            json!({"tid": "common"}),
            "not the pinned tenant",
        ),
        ("any-tenant", "empty", json!({"tid": ""}), "no `tid`"),
        (
            "any-tenant",
            "number",
            json!({"tid": 0}),
            "`tid` is not a string",
        ),
    ] {
        cases.push(case(class, name, forged(patch), expect));
    }
    let base = stub_claims(stub, clock, &json!({}));
    for typ in ["JOSE", "secevent+jwt", "dpop+jwt", "id_token+jwt", "JWT "] {
        cases.push(case(
            "token-type",
            typ,
            sign(&k.stub, &base, |h| h.typ = Some(typ.to_owned())),
            "token type",
        ));
    }
    cases
}

/// Foreign keys, algorithm and key-type mismatches, unexpected headers.
fn stub_key_cases(stub: &Stub, clock: &ManualClock) -> Vec<Case> {
    let k = keys();
    let mut stub_cases = Vec::new();
    let base = stub_claims(stub, clock, &json!({}));
    stub_cases.push(case(
        "same-kid-other-key",
        "stub-kid",
        sign(&k.attacker.with_kid(&k.stub.kid), &base, |_| {}),
        "signature",
    ));
    stub_cases.push(case(
        "alg-key-mismatch",
        "PS256-on-RS256-key",
        sign(&k.stub, &base, |h| h.alg = Algorithm::PS256),
        "is not the one of key",
    ));
    stub_cases.push(case(
        "alg-key-mismatch",
        "RS512-on-RS256-key",
        sign(&k.stub, &base, |h| h.alg = Algorithm::RS512),
        "is not the one of key",
    ));
    stub_cases.push(case(
        "alg-key-mismatch",
        "RS256-on-EC-key",
        sign(&k.attacker.with_kid(&k.ec.kid), &base, |_| {}),
        "is not the one of key",
    ));
    stub_cases.push(case(
        "alg-key-mismatch",
        "ES256-on-RSA-key",
        sign(&k.ec.with_kid(&k.stub.kid), &base, |_| {}),
        "is not the one of key",
    ));
    stub_cases.push(case(
        "headers",
        "crit",
        raw(
            &json!({"alg": "RS256", "kid": k.stub.kid, "crit": ["exp"]}),
            &base,
            "c2ln",
        ),
        "`crit`",
    ));
    stub_cases.push(case(
        "headers",
        "typ-jwe",
        sign(&k.stub, &base, |h| h.typ = Some("JWE".to_owned())),
        "token type",
    ));
    stub_cases.push(case(
        "headers",
        "typ-logout",
        sign(&k.stub, &base, |h| h.typ = Some("logout+jwt".to_owned())),
        "token type",
    ));
    stub_cases
}

#[tokio::test]
async fn forged_and_misused_tokens_are_refused() {
    init();
    let k = keys();
    let clock = ManualClock::new();
    let stub = Stub::start(vec![&k.stub, &k.ec]).await;
    let stub_id = stub_identity(&stub, &clock).await;
    let (real, redirect) = fixture_identity(Arc::new(SystemClock), None).await;
    let evil = format!("{}/evil", stub.url);
    let g = genuine(&real, &redirect).await;
    let mut real_cases = header_cases(&g, &evil);
    real_cases.extend(signature_and_misuse_cases(&g));
    real_cases.extend(malformed_cases(&g));
    stub_positive_controls(&stub_id, &stub, &clock).await;
    let mut stub_cases = stub_claim_cases(&stub, &clock);
    stub_cases.extend(stub_key_cases(&stub, &clock));

    let strict_cases = stub_strict_cases(&stub, &clock);
    let mut failures = check_refused(&real, &real_cases).await;
    failures.extend(check_refused(&stub_id, &stub_cases).await);
    failures.extend(check_refused(&stub_id, &strict_cases).await);
    let (over_http, _) = fixture_identity(Arc::new(SystemClock), None).await;
    failures.extend(
        check_refused_over_http(
            over_http,
            &access_token(&g.good),
            &real_cases.iter().collect::<Vec<_>>(),
        )
        .await,
    );
    let stub_genuine = sign(&k.stub, &stub_claims(&stub, &clock, &json!({})), |_| {});
    failures.extend(
        check_refused_over_http(
            stub_identity(&stub, &clock).await,
            &stub_genuine,
            &stub_cases.iter().chain(&strict_cases).collect::<Vec<_>>(),
        )
        .await,
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        stub.evil_hits(),
        0,
        "a key URL from a token header was fetched"
    );

    let classes: BTreeSet<&str> = real_cases
        .iter()
        .chain(&stub_cases)
        .chain(&strict_cases)
        .map(|c| c.class)
        .collect();
    for class in [
        "duplicate-members",
        "wrong-types",
        "absurd-exp",
        "any-tenant",
        "token-type",
    ] {
        assert!(classes.contains(class), "no {class} case");
    }
    let total = real_cases.len() + stub_cases.len() + strict_cases.len();
    assert!(
        classes.len() >= 20,
        "{} classes: {classes:?}",
        classes.len()
    );
    assert!(total >= 110, "{total} cases");
    eprintln!(
        "{total} forged or misused tokens refused, {} classes",
        classes.len()
    );
}

#[tokio::test]
async fn unknown_kids_refetch_keys_at_most_once_per_window() {
    init();
    let k = keys();
    let clock = ManualClock::new();
    let stub = Stub::start(vec![&k.stub]).await;
    let identity = stub_identity(&stub, &clock).await;
    assert_eq!(stub.jwks_hits(), 1, "one fetch at start");
    let claims = stub_claims(&stub, &clock, &json!({}));
    let valid = sign(&k.stub, &claims, |_| {});
    for _ in 0..5 {
        identity.bearer.validate(&valid).await.unwrap();
    }
    assert_eq!(stub.jwks_hits(), 1, "known keys come from the cache");

    // a burst of unknown kids, also concurrent: one refetch
    let unknown: Vec<String> = (0..20)
        .map(|i| {
            sign(
                &k.attacker.with_kid(&format!("unknown-{i}")),
                &claims,
                |_| {},
            )
        })
        .collect();
    let results =
        futures_util::future::join_all(unknown.iter().map(|t| identity.bearer.validate(t))).await;
    assert!(results.iter().all(Result::is_err));
    for token in &unknown {
        assert!(identity.bearer.validate(token).await.is_err());
    }
    assert_eq!(stub.jwks_hits(), 2, "at most one refetch per window");

    // the window passes: one more refetch, then quiet again
    clock.advance(time::Duration::seconds(31));
    assert!(identity.bearer.validate(&unknown[0]).await.is_err());
    assert!(identity.bearer.validate(&unknown[1]).await.is_err());
    assert_eq!(stub.jwks_hits(), 3);

    // rotation: the provider publishes a new key and drops the old one
    stub.state.set_keys(&[&k.rotated]);
    let claims = stub_claims(&stub, &clock, &json!({}));
    let new_token = sign(&k.rotated, &claims, |_| {});
    let old_token = sign(&k.stub, &claims, |_| {});
    // still inside the window: the new kid is not fetched yet, the cached old key still works
    assert!(identity.bearer.validate(&new_token).await.is_err());
    identity.bearer.validate(&old_token).await.unwrap();
    assert_eq!(stub.jwks_hits(), 3);
    clock.advance(time::Duration::seconds(31));
    identity
        .bearer
        .validate(&new_token)
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason()));
    assert_eq!(stub.jwks_hits(), 4);
    let e = identity.bearer.validate(&old_token).await.unwrap_err();
    assert!(e.reason().contains("unknown signing key"), "{}", e.reason());
    for _ in 0..5 {
        identity.bearer.validate(&new_token).await.unwrap();
    }
    assert_eq!(stub.jwks_hits(), 4);

    // keys older than their maximum age are refetched on use; a failed refetch keeps them
    clock.advance(time::Duration::minutes(61));
    let claims = stub_claims(&stub, &clock, &json!({}));
    identity
        .bearer
        .validate(&sign(&k.rotated, &claims, |_| {}))
        .await
        .unwrap();
    assert_eq!(stub.jwks_hits(), 5);
    *stub.state.jwks.lock().unwrap() = json!("broken");
    clock.advance(time::Duration::minutes(61));
    let claims = stub_claims(&stub, &clock, &json!({}));
    identity
        .bearer
        .validate(&sign(&k.rotated, &claims, |_| {}))
        .await
        .unwrap();
    assert_eq!(stub.jwks_hits(), 6);
}

#[tokio::test]
async fn one_app_registration_can_be_web_client_and_api() {
    init();
    let k = keys();
    let clock = ManualClock::new();
    let stub = Stub::start(vec![&k.stub]).await;
    // Entra v2.0: access tokens for the app's own API carry its client id as `aud`
    let mut same_app = config(&stub.url);
    same_app.api_audience = same_app.client_id.clone();
    let identity = Identity::discover(&same_app, &redirect_uri(), Arc::new(clock.clone()), None)
        .await
        .unwrap();
    let access = stub_claims(&stub, &clock, &json!({"aud": "jit-web"}));
    identity
        .bearer
        .validate(&sign(&k.stub, &access, |_| {}))
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason()));
    // ID tokens of the same app carry no scope (and a nonce from the browser flow)
    for (patch, expect) in [
        (json!({"aud": "jit-web", "scp": null}), "scope `access`"),
        (
            json!({"aud": "jit-web", "scp": null, "nonce": "n"}),
            "`nonce`",
        ),
    ] {
        let token = sign(&k.stub, &stub_claims(&stub, &clock, &patch), |_| {});
        let e = identity.bearer.validate(&token).await.unwrap_err();
        assert!(e.reason().contains(expect), "{patch}: {}", e.reason());
    }
    // without a required scope the two kinds of token cannot be told apart: refused at setup
    same_app.required_scope = None;
    let e = Identity::discover(&same_app, &redirect_uri(), Arc::new(clock.clone()), None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("oidc.required_scope"), "{e}");
}

#[tokio::test]
async fn without_a_pinned_tenant_the_broker_refuses_to_start_unless_told_otherwise() {
    init();
    let k = keys();
    let clock = ManualClock::new();
    let stub = Stub::start(vec![&k.stub]).await;
    let discover = |c: OidcConfig| {
        let clock = clock.clone();
        async move { Identity::discover(&c, &redirect_uri(), Arc::new(clock), None).await }
    };
    let mut unpinned = config(&stub.url);
    unpinned.tenant_id = None;
    let e = discover(unpinned.clone()).await.err().unwrap().to_string();
    assert!(
        e.contains("oidc.tenant_id") && e.contains("allow_any_tenant"),
        "{e}"
    );

    // Said in so many words: any tenant signs in, keyed by its own tenant.
    let mut any = unpinned.clone();
    any.allow_any_tenant = true;
    let identity = discover(any.clone()).await.unwrap();
    assert_eq!(identity.tenant(), None);
    let token = sign(
        &k.stub,
        &stub_claims(&stub, &clock, &json!({"tid": OTHER_TENANT})),
        |_| {},
    );
    let user = identity.bearer.validate(&token).await.unwrap();
    assert_eq!(
        user.key,
        format!("{OTHER_TENANT}/00000000-0000-0000-0000-00000000a11c")
    );

    // Both a pinned tenant and "any tenant": one of them is a mistake.
    let mut both = any.clone();
    both.tenant_id = Some(TENANT.to_owned());
    let e = discover(both).await.err().unwrap().to_string();
    assert!(e.contains("oidc.allow_any_tenant"), "{e}");
    let mut entra = any;
    entra.issuer = format!("https://login.microsoftonline.com/{TENANT}/v2.0");
    let e = discover(entra).await.err().unwrap().to_string();
    assert!(e.contains("oidc.allow_any_tenant"), "{e}");
    // A pinned tenant needs the claim that carries it.
    let mut no_claim = config(&stub.url);
    no_claim.claims.tenant = String::new();
    let e = discover(no_claim).await.err().unwrap().to_string();
    assert!(e.contains("oidc.claims.tenant"), "{e}");
}

/// Makes an ID token for a sign-in's nonce.
type MakeToken<'a> = &'a dyn Fn(&str) -> String;

/// ID tokens from the token endpoint are read as strictly as bearer tokens: a member named
/// twice, a claim of the wrong type, a lifetime past the limit or an access token's `typ` end
/// the sign-in.
#[tokio::test]
async fn id_tokens_are_read_strictly() {
    init();
    let k = keys();
    let clock = ManualClock::new();
    let stub = Stub::start(vec![&k.stub]).await;
    let identity = stub_identity(&stub, &clock).await;
    let now = clock.now().unix_timestamp();
    // Signs in with the ID token `make(nonce)` (the nonce of this sign-in's login state).
    let sign_in = |make: &dyn Fn(&str) -> String| {
        let (_, state) = identity.oidc.begin("/", None);
        let fields = serde_json::to_value(&state).unwrap();
        *stub.state.id_token.lock().unwrap() = make(fields["nonce"].as_str().unwrap());
        let identity = &identity;
        async move {
            identity
                .oidc
                .complete(&state, "code", fields["csrf_state"].as_str().unwrap())
                .await
        }
    };
    let claims = |nonce: &str, patch: &Value| {
        let mut c = json!({
            "iss": stub.url, "aud": "jit-web", "sub": "alice", "exp": now + 600, "iat": now,
            "nonce": nonce, "oid": "00000000-0000-0000-0000-00000000a11c", "tid": TENANT,
            "name": "Alice", "groups": ["grp-jit-requesters"],
        });
        for (name, value) in patch.as_object().unwrap() {
            c[name] = value.clone();
        }
        c
    };
    let id_token = |patch: Value, typ: &'static str| {
        move |nonce: &str| {
            sign(&k.stub, &claims(nonce, &patch), |h| {
                h.typ = Some(typ.to_owned());
            })
        }
    };
    let user = sign_in(&id_token(json!({}), "JWT"))
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason()))
        .user;
    assert_eq!(user.groups, ["grp-jit-requesters"]);

    let header = format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{}"}}"#, k.stub.kid);
    let twice = |nonce: &str| {
        let text = claims(nonce, &json!({})).to_string();
        let payload = format!(
            r#"{},"oid":"00000000-0000-0000-0000-0000000000b0"}}"#,
            &text[..text.len() - 1]
        );
        sign_text(&k.stub, &header, &payload)
    };
    let cases: [(&str, MakeToken<'_>, &str); 4] = [
        ("oid twice", &twice, "appears twice"),
        (
            "groups as a string",
            &id_token(json!({"groups": "grp-prod-admins"}), "JWT"),
            "`groups` is not an array of strings",
        ),
        (
            "25 hours",
            &id_token(json!({"exp": now + 25 * 3600}), "JWT"),
            "longest token lifetime",
        ),
        ("access token type", &id_token(json!({}), "at+jwt"), "type"),
    ];
    for (name, make, expect) in cases {
        let e = sign_in(make)
            .await
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        assert_eq!(
            e.kind(),
            AuthErrorKind::SignInFailed,
            "{name}: {}",
            e.reason()
        );
        assert!(e.reason().contains(expect), "{name}: {}", e.reason());
    }
}
