//! Token claims → [`User`], with the configurable [`ClaimMapping`], tenant pinning and group
//! overage (Entra omits `groups` past 200 groups and points at Microsoft Graph instead).

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

use super::{AuthError, strict};
use crate::clock::Clock;
use crate::config::ClaimMapping;
use crate::domain::User;
use crate::fifo::Fifo;

/// How long a user's resolved groups are reused.
const GROUP_CACHE_TTL: Duration = Duration::minutes(5);
/// Most users whose groups are cached.
const GROUP_CACHE_MAX: usize = 10_000;
/// Most groups or roles taken from one token or lookup.
const MAX_GROUPS: usize = 5_000;

/// A failed group lookup (the message is logged, never shown to the user).
#[derive(Debug, Error)]
#[error("group lookup: {0}")]
pub struct GroupLookupError(pub String);

/// Resolves a user's groups when the token only says "too many groups to list"
/// (Entra group overage). Implemented with Microsoft Graph
/// (`GET /users/{oid}/transitiveMemberOf/microsoft.graph.group`, or `getMemberObjects`).
#[async_trait::async_trait]
pub trait GroupResolver: Send + Sync {
    /// The group ids (as the `groups` claim would list them) of the user with object id `oid`.
    async fn user_groups(&self, oid: &str) -> Result<Vec<String>, GroupLookupError>;
}

/// Resolved groups per `oid`, kept for [`GROUP_CACHE_TTL`]; at most [`GROUP_CACHE_MAX`]
/// users, the one added first going for each added past that ([`Fifo`]: no sweep or
/// clear of the whole cache under its lock).
pub(crate) struct GroupCache {
    resolver: Arc<dyn GroupResolver>,
    clock: Arc<dyn Clock>,
    entries: Mutex<Fifo<String, (Vec<String>, OffsetDateTime)>>,
}

impl GroupCache {
    pub(crate) fn new(resolver: Arc<dyn GroupResolver>, clock: Arc<dyn Clock>) -> Self {
        Self::with_cap(resolver, clock, GROUP_CACHE_MAX)
    }

    fn with_cap(resolver: Arc<dyn GroupResolver>, clock: Arc<dyn Clock>, cap: usize) -> Self {
        Self {
            resolver,
            clock,
            entries: Mutex::new(Fifo::new(cap)),
        }
    }

    pub(crate) async fn groups(&self, oid: &str) -> Result<Vec<String>, GroupLookupError> {
        let now = self.clock.now();
        if let Some((groups, at)) = self.lock().get(oid)
            && now - *at < GROUP_CACHE_TTL
        {
            return Ok(groups.clone());
        }
        let mut groups = self.resolver.user_groups(oid).await?;
        groups.truncate(MAX_GROUPS);
        let gone = self.lock().insert(oid.to_owned(), (groups.clone(), now));
        drop(gone);
        Ok(groups)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Fifo<String, (Vec<String>, OffsetDateTime)>> {
        match self.entries.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// A user read from verified claims, before group overage is resolved.
#[derive(Debug)]
pub(crate) struct Mapped {
    pub user: User,
    /// The token carried an overage marker instead of `groups`.
    pub overage: bool,
}

/// Maps verified token claims to a [`User`]; `tenant` is the pinned tenant, if any. Every claim
/// read must have its exact JSON type: strings for the ids, name and email, arrays of strings
/// for groups, roles, `amr` and `acrs`, a number for `auth_time`.
pub(crate) fn map_user(
    claims: &Map<String, Value>,
    mapping: &ClaimMapping,
    tenant: Option<&str>,
) -> Result<Mapped, AuthError> {
    let oid = nonempty(claims, &mapping.user_id)?
        .ok_or_else(|| AuthError::invalid(format!("token has no `{}` claim", mapping.user_id)))?;
    let key = if mapping.tenant.is_empty() {
        oid.to_owned()
    } else {
        let tid = nonempty(claims, &mapping.tenant)?.ok_or_else(|| {
            AuthError::invalid(format!("token has no `{}` claim", mapping.tenant))
        })?;
        if let Some(pinned) = tenant
            && !tid.eq_ignore_ascii_case(pinned)
        {
            return Err(AuthError::invalid(format!(
                "token is from tenant {}, not the pinned tenant",
                shown(tid)
            )));
        }
        format!("{tid}/{oid}")
    };
    let mut email = String::new();
    for name in &mapping.email {
        if let Some(found) = nonempty(claims, name)?
            && email.is_empty()
        {
            found.clone_into(&mut email);
        }
    }
    let name = nonempty(claims, &mapping.name)?.map_or_else(
        || {
            if email.is_empty() {
                oid.to_owned()
            } else {
                email.clone()
            }
        },
        str::to_owned,
    );
    let overage = has_overage(claims, &mapping.groups);
    let groups = list(claims, &mapping.groups)?;
    let roles = list(claims, &mapping.roles)?;
    let mfa = list(claims, "amr")?.iter().any(|m| m == "mfa");
    let acrs = list(claims, "acrs")?;
    let auth_time = strict::numeric_date(claims, "auth_time")?;
    Ok(Mapped {
        user: User {
            key,
            oid: Some(oid.to_owned()),
            name,
            email,
            groups: if overage { Vec::new() } else { groups },
            roles,
            mfa,
            auth_time,
            acrs,
        },
        overage,
    })
}

/// Resolves overage groups through the cache; without a resolver the sign-in fails closed.
pub(crate) async fn resolve_overage(
    mapped: Mapped,
    groups: Option<&GroupCache>,
) -> Result<User, AuthError> {
    let Mapped { mut user, overage } = mapped;
    if !overage {
        return Ok(user);
    }
    let Some(cache) = groups else {
        return Err(AuthError::unavailable(
            "token has a group overage marker and no group resolver is configured ([entra])",
        ));
    };
    let oid = user.oid.clone().unwrap_or_default();
    user.groups = cache
        .groups(&oid)
        .await
        .map_err(|e| AuthError::unavailable(format!("group overage: {e}")))?;
    Ok(user)
}

/// `_claim_names` names the groups claim, or `hasgroups` is true (implicit-flow overage).
fn has_overage(claims: &Map<String, Value>, groups_claim: &str) -> bool {
    let distributed = claims
        .get("_claim_names")
        .and_then(Value::as_object)
        .is_some_and(|names| names.contains_key(groups_claim));
    let has_groups = claims
        .get("hasgroups")
        .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"));
    (distributed || has_groups) && !claims.contains_key(groups_claim)
}

/// A string claim, trimmed, `None` when absent or blank; another type is refused.
fn nonempty<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, AuthError> {
    Ok(strict::string(claims, name)?
        .map(str::trim)
        .filter(|s| !s.is_empty()))
}

/// An array of strings (empty ones dropped, at most [`MAX_GROUPS`]); absent is empty, a plain
/// string or any other type is refused.
fn list(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, AuthError> {
    Ok(strict::strings(claims, name)?
        .unwrap_or_default()
        .into_iter()
        .filter(|s| !s.is_empty())
        .take(MAX_GROUPS)
        .map(str::to_owned)
        .collect())
}

/// An attacker-controlled value for a log line: escaped and cut short.
pub(crate) fn shown(value: &str) -> String {
    let cut: String = value.chars().take(64).collect();
    if cut.len() < value.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    const TID: &str = "11111111-2222-3333-4444-555555555555";

    /// Answers every lookup with the oid as its one group, and counts the lookups.
    #[derive(Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl GroupResolver for Counting {
        async fn user_groups(&self, oid: &str) -> Result<Vec<String>, GroupLookupError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(vec![format!("group-of-{oid}")])
        }
    }

    #[tokio::test]
    async fn resolved_groups_are_reused_for_their_ttl_and_the_oldest_user_goes_past_the_cap() {
        let resolver = Arc::new(Counting::default());
        let clock = Arc::new(crate::clock::ManualClock::new());
        let cache = GroupCache::with_cap(resolver.clone(), clock.clone(), 2);
        let lookups = || resolver.0.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(cache.groups("a").await.unwrap(), ["group-of-a"]);
        assert_eq!(cache.groups("a").await.unwrap(), ["group-of-a"]);
        assert_eq!(lookups(), 1, "the second is answered from the cache");
        cache.groups("b").await.unwrap();
        cache.groups("c").await.unwrap();
        assert_eq!(cache.lock().len(), 2, "held at its cap");
        assert_eq!(lookups(), 3);
        // `a` went when `c` came; `c` is still held.
        cache.groups("c").await.unwrap();
        assert_eq!(lookups(), 3);
        cache.groups("a").await.unwrap();
        assert_eq!(lookups(), 4);
        // Past the TTL a held user is looked up again.
        clock.advance(GROUP_CACHE_TTL);
        cache.groups("a").await.unwrap();
        assert_eq!(lookups(), 5);
        assert_eq!(cache.lock().len(), 2);
    }

    #[test]
    fn entra_claims_map_to_a_user() {
        let c = claims(json!({
            "oid": "o-1", "tid": TID, "name": "Alice", "preferred_username": "alice@example.com",
            "groups": ["g1", "g2"], "roles": ["jit.admin"], "amr": ["pwd", "mfa"], "auth_time": 1_700_000_000
        }));
        let m = map_user(&c, &ClaimMapping::default(), Some(TID)).unwrap();
        assert!(!m.overage);
        assert_eq!(m.user.key, format!("{TID}/o-1"));
        assert_eq!(m.user.oid.as_deref(), Some("o-1"));
        assert_eq!(m.user.email, "alice@example.com");
        assert_eq!(m.user.name, "Alice");
        assert_eq!(m.user.groups, ["g1", "g2"]);
        assert_eq!(m.user.roles, ["jit.admin"]);
        assert!(m.user.mfa);
        assert_eq!(m.user.auth_time, Some(1_700_000_000));
    }

    #[test]
    fn email_comes_first_then_preferred_username_and_name_falls_back() {
        let c =
            claims(json!({"oid": "o", "tid": TID, "email": "e@x", "preferred_username": "p@x"}));
        let m = map_user(&c, &ClaimMapping::default(), None).unwrap();
        assert_eq!(m.user.email, "e@x");
        assert_eq!(m.user.name, "e@x");
        assert!(!m.user.mfa);
        assert!(m.user.groups.is_empty());
    }

    #[test]
    fn missing_subject_and_other_tenants_are_refused() {
        let map = ClaimMapping::default();
        assert!(map_user(&claims(json!({"tid": TID})), &map, None).is_err());
        assert!(map_user(&claims(json!({"oid": "o"})), &map, None).is_err());
        assert!(map_user(&claims(json!({"oid": "", "tid": TID})), &map, None).is_err());
        let e = map_user(
            &claims(json!({"oid": "o", "tid": "other"})),
            &map,
            Some(TID),
        )
        .unwrap_err();
        assert!(e.reason().contains("tenant"), "{}", e.reason());
        // no tenant claim in the mapping: the key is the user id alone
        let no_tenant = ClaimMapping {
            tenant: String::new(),
            user_id: "sub".to_owned(),
            ..ClaimMapping::default()
        };
        let m = map_user(&claims(json!({"sub": "alice"})), &no_tenant, None).unwrap();
        assert_eq!(m.user.key, "alice");
    }

    #[test]
    fn claims_of_the_wrong_type_are_refused() {
        let map = ClaimMapping::default();
        let base = json!({"oid": "o", "tid": TID, "groups": ["g"], "roles": [], "amr": ["pwd"]});
        for (name, value) in [
            ("oid", json!(42)),
            ("oid", json!(["o"])),
            ("tid", json!({"id": TID})),
            ("groups", json!("grp-prod-admins")),
            ("groups", json!(["g", 1])),
            ("roles", json!("jit.admin")),
            ("amr", json!("mfa")),
            ("acrs", json!("c1")),
            ("acrs", json!([1])),
            ("auth_time", json!("1700000000")),
            ("email", json!(["a@example.com"])),
            ("preferred_username", json!(7)),
            ("name", json!(true)),
        ] {
            let mut c = base.clone();
            c[name] = value;
            let e = map_user(&claims(c.clone()), &map, Some(TID)).unwrap_err();
            assert!(
                e.reason().contains(&format!("`{name}`")),
                "{c}: {}",
                e.reason()
            );
        }
        map_user(&claims(base), &map, Some(TID)).unwrap();
    }

    #[test]
    fn overage_markers_are_detected() {
        let map = ClaimMapping::default();
        let c = claims(
            json!({"oid": "o", "tid": TID, "_claim_names": {"groups": "src1"},
            "_claim_sources": {"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/o/getMemberObjects"}}}),
        );
        assert!(map_user(&c, &map, None).unwrap().overage);
        let c = claims(json!({"oid": "o", "tid": TID, "hasgroups": true}));
        assert!(map_user(&c, &map, None).unwrap().overage);
        let c = claims(json!({"oid": "o", "tid": TID, "hasgroups": false}));
        assert!(!map_user(&c, &map, None).unwrap().overage);
        let c = claims(json!({"oid": "o", "tid": TID, "_claim_names": {"other": "src1"}}));
        assert!(!map_user(&c, &map, None).unwrap().overage);
    }

    #[tokio::test]
    async fn overage_without_resolver_fails_closed() {
        let c = claims(json!({"oid": "o", "tid": TID, "hasgroups": true}));
        let m = map_user(&c, &ClaimMapping::default(), None).unwrap();
        let e = resolve_overage(m, None).await.unwrap_err();
        assert_eq!(e.kind(), super::super::AuthErrorKind::Unavailable);
    }

    #[test]
    fn shown_values_are_escaped_and_short() {
        assert_eq!(shown("a\"b"), "\"a\\\"b\"");
        assert!(shown(&"x".repeat(500)).len() < 80);
    }
}
