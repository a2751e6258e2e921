//! HTTP: JSON API, server-rendered UI, auth, health.

use base64::Engine;

/// Decodes `server.session_key` (base64, at least 64 bytes).
pub fn session_key_bytes(text: &str) -> Result<Vec<u8>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "must be base64 (e.g. `openssl rand -base64 64`)".to_owned())?;
    if bytes.len() < 64 {
        return Err(format!("must hold at least 64 bytes, has {}", bytes.len()));
    }
    Ok(bytes)
}
