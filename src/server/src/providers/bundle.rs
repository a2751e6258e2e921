//! Bundles (`[[bundle]]`): one grant that makes every member's grant through the member's
//! own provider, all or nothing. When a member's grant fails, the members granted in the
//! same attempt are removed again before the error is returned, and the error names every
//! member's outcome. Removals and session ends act on every member.

use async_trait::async_trait;
use serde_json::json;

use super::{
    AwsCredentials, GrantProvider, GrantRecord, GrantSpec, ProviderError, Providers, SessionsEnded,
};
use crate::policy::catalog::{Entitlement, Kind};

/// Makes and removes the grants of a bundle's members.
pub struct Bundle {
    /// The providers of the member kinds (a bundle holds no bundles).
    members: Providers,
}

impl Bundle {
    /// Over these providers.
    pub fn new(members: Providers) -> Self {
        Self { members }
    }

    fn provider(&self, member: &Entitlement) -> &dyn GrantProvider {
        self.members.get(member.kind)
    }

    /// The single `aws_role` member, which issues the bundle's credentials and console
    /// sign-ins.
    fn role_member<'a>(spec: &GrantSpec<'a>) -> Result<GrantSpec<'a>, ProviderError> {
        let mut roles = spec
            .entitlement
            .members()
            .iter()
            .filter(|m| m.kind == Kind::AwsRole);
        match (roles.next(), roles.next()) {
            (Some(role), None) => Ok(for_member(spec, role)),
            (None, _) => Err(ProviderError::Permanent(format!(
                "bundle `{}` has no AWS role: it issues no credentials",
                spec.entitlement.id
            ))),
            (Some(_), Some(_)) => Err(ProviderError::Permanent(format!(
                "bundle `{}` has more than one AWS role: ask for credentials of one of them",
                spec.entitlement.id
            ))),
        }
    }
}

/// `spec` for one member of its bundle.
fn for_member<'a>(spec: &GrantSpec<'a>, member: &'a Entitlement) -> GrantSpec<'a> {
    GrantSpec {
        entitlement: member,
        ..spec.clone()
    }
}

/// One error from the members' errors: transient (worth another attempt) only when every
/// one of them is.
fn combined(bundle: &str, errors: &[(String, ProviderError)], extra: &[String]) -> ProviderError {
    let transient = errors
        .iter()
        .all(|(_, e)| matches!(e, ProviderError::Transient(_)));
    let words: Vec<String> = errors
        .iter()
        .map(|(id, e)| format!("`{id}`: {e}"))
        .chain(extra.iter().cloned())
        .collect();
    let text = format!("bundle `{bundle}`: {}", words.join("; "));
    if transient {
        ProviderError::Transient(text)
    } else {
        ProviderError::Permanent(text)
    }
}

#[async_trait]
impl GrantProvider for Bundle {
    async fn grant(&self, spec: &GrantSpec<'_>) -> Result<GrantRecord, ProviderError> {
        let members = spec.entitlement.members();
        let mut granted = Vec::new();
        let mut failed = Vec::new();
        // Every member is tried, so that the requester learns every reason at once.
        for member in members {
            match self.provider(member).grant(&for_member(spec, member)).await {
                Ok(record) => granted.push((member, record)),
                Err(e) => failed.push((member.id.clone(), e)),
            }
        }
        if failed.is_empty() {
            let details: Vec<_> = granted
                .iter()
                .map(|(m, r)| {
                    json!({
                        "entitlement": m.id,
                        "kind": m.kind.as_str(),
                        "reference": r.reference,
                        "details": r.details,
                    })
                })
                .collect();
            let reference = granted
                .iter()
                .map(|(m, r)| format!("{}={}", m.id, r.reference.as_deref().unwrap_or("-")))
                .collect::<Vec<_>>()
                .join(" ");
            return Ok(GrantRecord {
                reference: Some(reference),
                details: json!({ "bundle": spec.entitlement.id, "members": details }),
            });
        }
        // All or nothing: what this attempt made is removed again. What another live grant
        // holds (`held`: the grant an extension extends) was only adopted, and stays.
        let mut rolled_back = Vec::new();
        for (member, _) in granted {
            let one = for_member(spec, member);
            if spec.held {
                rolled_back.push(format!("`{}`: granted, kept (held before)", member.id));
                continue;
            }
            let provider = self.provider(member);
            let removed = match provider.revoke(&one).await {
                Ok(()) => provider.end_sessions(&one).await.map(|_| ()),
                Err(e) => Err(e),
            };
            rolled_back.push(match removed {
                Ok(()) => format!("`{}`: granted, then rolled back", member.id),
                Err(e) => {
                    tracing::error!(error = %e, entitlement = %member.id, "bundle roll-back failed: its removal is queued");
                    format!("`{}`: granted, roll-back failed ({e})", member.id)
                }
            });
        }
        Err(combined(&spec.entitlement.id, &failed, &rolled_back))
    }

    async fn revoke(&self, spec: &GrantSpec<'_>) -> Result<(), ProviderError> {
        // Every member, even after one fails; a retry repeats them all (each is idempotent).
        let mut failed = Vec::new();
        let mut removed = Vec::new();
        for member in spec.entitlement.members() {
            match self
                .provider(member)
                .revoke(&for_member(spec, member))
                .await
            {
                Ok(()) => removed.push(member),
                Err(e) => failed.push((member.id.clone(), e)),
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        // The members removed already have their sessions ended now, not once the others
        // are removed too (PIM refuses a removal for five minutes after an assignment): the
        // broker ends them again, with the rest, when the whole removal succeeds.
        for member in removed {
            if let Err(e) = self
                .provider(member)
                .end_sessions(&for_member(spec, member))
                .await
            {
                failed.push((member.id.clone(), e));
            }
        }
        Err(combined(&spec.entitlement.id, &failed, &[]))
    }

    async fn end_sessions(
        &self,
        spec: &GrantSpec<'_>,
    ) -> Result<Option<SessionsEnded>, ProviderError> {
        let mut details = serde_json::Map::new();
        let mut prune_at = None;
        let mut failed = Vec::new();
        for member in spec.entitlement.members() {
            match self
                .provider(member)
                .end_sessions(&for_member(spec, member))
                .await
            {
                Ok(Some(ended)) => {
                    details.insert(member.id.clone(), ended.details);
                    prune_at = prune_at.max(ended.prune_at);
                }
                Ok(None) => {}
                Err(e) => failed.push((member.id.clone(), e)),
            }
        }
        if !failed.is_empty() {
            return Err(combined(&spec.entitlement.id, &failed, &[]));
        }
        Ok((!details.is_empty()).then(|| SessionsEnded {
            details: serde_json::Value::Object(details),
            prune_at,
        }))
    }

    async fn mint_credentials(
        &self,
        spec: &GrantSpec<'_>,
        session_seconds: u64,
    ) -> Result<AwsCredentials, ProviderError> {
        let role = Self::role_member(spec)?;
        self.provider(role.entitlement)
            .mint_credentials(&role, session_seconds)
            .await
    }

    async fn console_url(
        &self,
        spec: &GrantSpec<'_>,
        session_seconds: u64,
    ) -> Result<String, ProviderError> {
        let role = Self::role_member(spec)?;
        self.provider(role.entitlement)
            .console_url(&role, session_seconds)
            .await
    }
}
