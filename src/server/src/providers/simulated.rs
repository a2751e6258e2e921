//! The development-mode provider: grants are recorded, marked simulated, and
//! nothing is made in any cloud.

use async_trait::async_trait;
use time::format_description::well_known::Rfc3339;

use super::{AwsCredentials, GrantProvider, GrantRecord, GrantSpec, ProviderError};
use crate::policy::catalog::Kind;

/// Records grants without touching a cloud.
pub struct Simulated;

#[async_trait]
impl GrantProvider for Simulated {
    async fn grant(&self, spec: &GrantSpec<'_>) -> Result<GrantRecord, ProviderError> {
        Ok(GrantRecord {
            reference: Some(format!("simulated-{}", spec.request_id)),
            details: serde_json::json!({ "simulated": true }),
        })
    }

    async fn revoke(&self, _spec: &GrantSpec<'_>) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn mint_credentials(
        &self,
        spec: &GrantSpec<'_>,
        session_seconds: u64,
    ) -> Result<AwsCredentials, ProviderError> {
        if spec.entitlement.kind != Kind::AwsRole {
            return Err(ProviderError::Permanent(
                "this entitlement does not issue credentials".to_owned(),
            ));
        }
        let expires = time::OffsetDateTime::now_utc()
            + time::Duration::seconds(i64::try_from(session_seconds).unwrap_or(900));
        let id = spec.request_id.simple().to_string().to_uppercase();
        Ok(AwsCredentials {
            access_key_id: format!("ASIASIMULATED{}", &id[..7]),
            secret_access_key: "simulated-secret-not-valid-anywhere".to_owned(),
            session_token: "simulated-session-token-not-valid-anywhere".to_owned(),
            expiration: expires
                .replace_nanosecond(0)
                .unwrap_or(expires)
                .format(&Rfc3339)
                .unwrap_or_default(),
        })
    }

    async fn console_url(
        &self,
        spec: &GrantSpec<'_>,
        _session_seconds: u64,
    ) -> Result<String, ProviderError> {
        // A page of the broker's own that says the console is simulated (`http::handoff`).
        Ok(format!("/simulated/console/{}", spec.request_id))
    }

    fn simulated(&self) -> bool {
        true
    }
}
