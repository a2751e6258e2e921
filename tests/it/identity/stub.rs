//! Keys made at test time (`openssl genpkey`), and a stub issuer whose JWKS the test controls and
//! counts.

use super::*;

pub(super) struct TestKey {
    pub(super) kid: String,
    pub(super) alg: Algorithm,
    pub(super) encoding: EncodingKey,
    pub(super) jwk: Value,
}

impl TestKey {
    pub(super) fn with_kid(&self, kid: &str) -> Self {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = json!(kid);
        Self {
            kid: kid.to_owned(),
            alg: self.alg,
            encoding: self.encoding.clone(),
            jwk,
        }
    }
}

pub(super) struct Keys {
    pub(super) stub: TestKey,
    pub(super) rotated: TestKey,
    pub(super) attacker: TestKey,
    pub(super) ec: TestKey,
}

pub(super) fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("jit-identity-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = Keys {
            stub: openssl_key(&dir, "stub-1", Algorithm::RS256),
            rotated: openssl_key(&dir, "stub-2", Algorithm::RS256),
            attacker: openssl_key(&dir, "attacker", Algorithm::RS256),
            ec: openssl_key(&dir, "stub-ec", Algorithm::ES256),
        };
        std::fs::remove_dir_all(&dir).ok();
        keys
    })
}

pub(super) fn openssl_key(dir: &std::path::Path, kid: &str, alg: Algorithm) -> TestKey {
    let path: PathBuf = dir.join(format!("{kid}.pem"));
    let algorithm_args: &[&str] = match alg {
        Algorithm::ES256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        _ => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    };
    let output = std::process::Command::new("openssl")
        .arg("genpkey")
        .args(algorithm_args)
        .arg("-out")
        .arg(&path)
        .output()
        .expect("openssl must be installed to make test keys");
    assert!(
        output.status.success(),
        "openssl genpkey: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pem = std::fs::read(&path).unwrap();
    let encoding = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    let mut jwk =
        serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, alg).unwrap())
            .unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    TestKey {
        kid: kid.to_owned(),
        alg,
        encoding,
        jwk,
    }
}

#[derive(Default)]
pub(super) struct StubState {
    pub(super) base: Mutex<String>,
    pub(super) jwks: Mutex<Value>,
    pub(super) jwks_hits: AtomicUsize,
    pub(super) evil_hits: AtomicUsize,
    /// What the token endpoint answers with as `id_token`.
    pub(super) id_token: Mutex<String>,
}

pub(super) struct Stub {
    pub(super) url: String,
    pub(super) state: Arc<StubState>,
}

impl Stub {
    pub(super) async fn start(jwks: Vec<&TestKey>) -> Self {
        let state = Arc::new(StubState::default());
        state.set_keys(&jwks);
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(s): State<Arc<StubState>>| async move {
                    let base = s.base.lock().unwrap().clone();
                    Json(json!({
                        "issuer": base,
                        "authorization_endpoint": format!("{base}/auth"),
                        "token_endpoint": format!("{base}/token"),
                        "jwks_uri": format!("{base}/jwks"),
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                    }))
                }),
            )
            .route(
                "/jwks",
                get(|State(s): State<Arc<StubState>>| async move {
                    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
                    Json(s.jwks.lock().unwrap().clone())
                }),
            )
            .route(
                "/token",
                axum::routing::post(|State(s): State<Arc<StubState>>| async move {
                    Json(json!({
                        "access_token": "opaque",
                        "token_type": "Bearer",
                        "expires_in": 600,
                        "id_token": s.id_token.lock().unwrap().clone(),
                    }))
                }),
            )
            .route(
                "/evil/{*rest}",
                get(|State(s): State<Arc<StubState>>| async move {
                    s.evil_hits.fetch_add(1, Ordering::SeqCst);
                    Json(json!({ "keys": [keys().attacker.jwk.clone()] }))
                }),
            )
            .with_state(Arc::clone(&state));
        let url = serve(router).await;
        state.base.lock().unwrap().clone_from(&url);
        Self { url, state }
    }

    pub(super) fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    pub(super) fn evil_hits(&self) -> usize {
        self.state.evil_hits.load(Ordering::SeqCst)
    }
}

impl StubState {
    pub(super) fn set_keys(&self, keys: &[&TestKey]) {
        *self.jwks.lock().unwrap() =
            json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    }
}

pub(super) async fn stub_identity(stub: &Stub, clock: &ManualClock) -> Identity {
    Identity::discover(
        &config(&stub.url),
        &redirect_uri(),
        Arc::new(clock.clone()),
        None,
    )
    .await
    .expect("discovery against the stub issuer")
}

/// Claims of a valid access token from the stub issuer; `patch` sets (or with `null` removes) claims.
pub(super) fn stub_claims(stub: &Stub, clock: &ManualClock, patch: &Value) -> Value {
    let now = clock.now().unix_timestamp();
    let mut claims = json!({
        "iss": stub.url, "aud": API, "exp": now + 600, "iat": now - 5, "nbf": now - 5,
        "oid": "00000000-0000-0000-0000-00000000a11c", "tid": TENANT, "scp": "access",
        "name": "Forged Alice", "preferred_username": "alice@example.com",
        "groups": ["grp-prod-admins"], "ver": "2.0",
    });
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

pub(super) fn sign(key: &TestKey, claims: &Value, header: impl FnOnce(&mut Header)) -> String {
    let mut h = Header::new(key.alg);
    h.typ = Some("at+jwt".to_owned());
    h.kid = Some(key.kid.clone());
    header(&mut h);
    jsonwebtoken::encode(&h, claims, &key.encoding).unwrap()
}

pub(super) fn hmac_token(alg: Algorithm, kid: &str, claims: &Value, secret: &[u8]) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
}

/// A token signed by `key` over header and payload written as JSON text by hand (for what no
/// JSON encoder writes: a member named twice).
pub(super) fn sign_text(key: &TestKey, header: &str, payload: &str) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key.encoding, key.alg).unwrap();
    format!("{message}.{signature}")
}

/// A token assembled by hand (for headers jsonwebtoken would not write).
pub(super) fn raw(header: &Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64json(header), b64json(claims))
}

// DER, just enough for an RSA public key as PKCS#1 and SPKI (the HMAC-confusion secrets).
pub(super) fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap());
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | u8::try_from(bytes.len()).unwrap());
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

pub(super) fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if v.first().is_some_and(|b| b & 0x80 != 0) {
        v.insert(0, 0);
    }
    der(0x02, &v)
}

pub(super) fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
    .into_bytes()
}

/// The secrets a confused verifier might use as HMAC key: the RSA public key in every common form.
pub(super) fn public_key_forms(jwk: &Value) -> Vec<(&'static str, Vec<u8>)> {
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
    let pkcs1 = der(0x30, &[der_uint(&n), der_uint(&e)].concat());
    let algorithm = der(
        0x30,
        &[
            der(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            vec![0x05, 0x00],
        ]
        .concat(),
    );
    let spki = der(
        0x30,
        &[algorithm, der(0x03, &[&[0u8][..], &pkcs1].concat())].concat(),
    );
    vec![
        ("spki-pem", pem("PUBLIC KEY", &spki)),
        ("pkcs1-pem", pem("RSA PUBLIC KEY", &pkcs1)),
        ("spki-der", spki),
        ("modulus", n),
        ("jwk-json", jwk.to_string().into_bytes()),
    ]
}
