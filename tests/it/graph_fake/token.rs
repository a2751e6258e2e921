//! The fake's client-credentials token endpoint.

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::checks::is_guid;
use super::{
    ARM_SCOPES, ASSERTION_TYPE, FakeState, GRAPH_AUDIENCE, GRAPH_SCOPE, token_error, violation,
};

pub(super) fn token(s: &mut FakeState, form: &Value) -> Response {
    let Some(form) = form.as_object() else {
        return violation(s, 400, "token request has no form body".into());
    };
    let allowed = [
        "grant_type",
        "client_id",
        "scope",
        "client_secret",
        "client_assertion_type",
        "client_assertion",
    ];
    if let Some(k) = form.keys().find(|k| !allowed.contains(&k.as_str())) {
        s.violations
            .push(format!("token request: unknown field `{k}`"));
        return token_error(
            400,
            "invalid_request",
            900_144,
            &format!("Unknown parameter '{k}'."),
        );
    }
    let field = |k: &str| form.get(k).and_then(Value::as_str).unwrap_or("");
    if field("grant_type") != "client_credentials" {
        s.violations.push(format!(
            "token request: grant_type `{}`",
            field("grant_type")
        ));
        return token_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if field("client_id") != s.client_id {
        s.violations
            .push(format!("token request: client_id `{}`", field("client_id")));
        return token_error(
            400,
            "unauthorized_client",
            700_016,
            "Application was not found in the directory.",
        );
    }
    // Entra issues a token for any resource the app may call; the resource
    // (Graph, ARM) then checks the token's `aud`.
    let audience = match field("scope") {
        GRAPH_SCOPE => GRAPH_AUDIENCE.to_owned(),
        // The resource is the scope without `/.default` (hence the double
        // slash of `https://management.core.windows.net//.default`).
        scope if ARM_SCOPES.contains(&scope) => {
            scope.strip_suffix("/.default").unwrap_or(scope).to_owned()
        }
        _ => String::new(),
    };
    if audience.is_empty() {
        s.violations
            .push(format!("token request: scope `{}`", field("scope")));
        return token_error(
            400,
            "invalid_scope",
            70011,
            "The provided value for the input parameter 'scope' is not valid.",
        );
    }
    let has_secret = form.contains_key("client_secret");
    let has_assertion =
        form.contains_key("client_assertion") || form.contains_key("client_assertion_type");
    if has_secret == has_assertion {
        s.violations
            .push("token request: send exactly one of client_secret or client_assertion".into());
        return token_error(
            400,
            "invalid_request",
            7_000_218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    }
    if has_secret {
        if field("client_secret") != s.secret {
            return token_error(
                401,
                "invalid_client",
                7_000_215,
                "Invalid client secret provided.",
            );
        }
    } else {
        if field("client_assertion_type") != ASSERTION_TYPE {
            s.violations.push(format!(
                "token request: client_assertion_type `{}`",
                field("client_assertion_type")
            ));
            return token_error(
                400,
                "invalid_request",
                50027,
                "Invalid client_assertion_type.",
            );
        }
        if let Err(problem) = check_assertion(s, field("client_assertion")) {
            return token_error(
                401,
                "invalid_client",
                700_027,
                &format!("Client assertion failed signature validation: {problem}"),
            );
        }
    }
    let access_token = format!("fake-entra-token-{}", uuid::Uuid::new_v4().simple());
    let expires = s.now() + time::Duration::seconds(s.token_lifetime);
    s.tokens.insert(access_token.clone(), (expires, audience));
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": s.token_lifetime,
        "ext_expires_in": s.token_lifetime,
        "access_token": access_token,
    }))
    .into_response()
}

/// The checks Microsoft's certificate-credentials page lists.
fn check_assertion(s: &mut FakeState, jwt: &str) -> Result<(), String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let Some((public_pem, thumbprint)) = s.certificate.clone() else {
        return Err("no certificate is registered on the app".into());
    };
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("header: {e}"))?;
    if !matches!(header.alg, Algorithm::PS256 | Algorithm::RS256) {
        return Err(format!("alg {:?}", header.alg));
    }
    if header.typ.as_deref() != Some("JWT") {
        return Err(format!("typ {:?}", header.typ));
    }
    if header.x5t_s256.as_deref() != Some(thumbprint.as_str()) {
        return Err(format!(
            "x5t#S256 {:?} is not the registered certificate's",
            header.x5t_s256
        ));
    }
    let key = DecodingKey::from_rsa_pem(public_pem.as_bytes()).map_err(|e| format!("key: {e}"))?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[format!("{}/{}/oauth2/v2.0/token", s.base, s.tenant)]);
    validation.set_issuer(&[s.client_id.as_str()]);
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = 60;
    let data = jsonwebtoken::decode::<Value>(jwt, &key, &validation).map_err(|e| format!("{e}"))?;
    let claims = data.claims;
    if claims["sub"].as_str() != Some(s.client_id.as_str()) {
        return Err("sub is not the client id".into());
    }
    let jti = claims["jti"].as_str().unwrap_or("");
    if !is_guid(jti) {
        return Err(format!("jti `{jti}` is not a GUID"));
    }
    if !s.used_jti.insert(jti.to_owned()) {
        return Err(format!("jti `{jti}` was used before"));
    }
    let (Some(iat), Some(nbf), Some(exp)) = (
        claims["iat"].as_i64(),
        claims["nbf"].as_i64(),
        claims["exp"].as_i64(),
    ) else {
        return Err("iat, nbf and exp must be numbers".into());
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    if iat > now + 60 || exp - nbf > 3600 || exp <= nbf {
        return Err(format!("times iat={iat} nbf={nbf} exp={exp} (now {now})"));
    }
    Ok(())
}
