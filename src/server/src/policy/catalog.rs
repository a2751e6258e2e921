//! The entitlement catalog (`policies/entitlements.toml`).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::azure::{AzureScope, role_definition_guid};

/// Kind of access an entitlement grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// STS `AssumeRole`, minted on demand.
    AwsRole,
    /// IAM Identity Center account assignment.
    AwsIdentityCenter,
    /// Entra PIM directory role.
    EntraRole,
    /// Entra PIM for Groups.
    EntraGroup,
    /// Azure RBAC role through PIM (Azure Resource Manager).
    AzureRole,
    /// A `[[bundle]]` of entitlements, requested, approved, granted and ended together.
    Bundle,
}

impl Kind {
    /// The catalog name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwsRole => "aws_role",
            Self::AwsIdentityCenter => "aws_identity_center",
            Self::EntraRole => "entra_role",
            Self::EntraGroup => "entra_group",
            Self::AzureRole => "azure_role",
            Self::Bundle => "bundle",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "aws_role" => Self::AwsRole,
            "aws_identity_center" => Self::AwsIdentityCenter,
            "entra_role" => Self::EntraRole,
            "entra_group" => Self::EntraGroup,
            "azure_role" => Self::AzureRole,
            "bundle" => Self::Bundle,
            _ => return None,
        })
    }
}

/// What exactly is granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `aws_role`.
    AwsRole {
        /// `arn:aws:iam::…:role/…`.
        role_arn: String,
        /// Optional session policy JSON (≤ 2,048 characters).
        session_policy: Option<String>,
        /// Longest STS session, seconds (≤ 3,600 because of role chaining by default).
        session_seconds: u64,
    },
    /// `aws_identity_center`.
    AwsIdentityCenter {
        /// 12-digit account id.
        account_id: String,
        /// `arn:aws:sso:::permissionSet/…`.
        permission_set_arn: String,
        /// At removal, end the grantee's role sessions opened through the
        /// access portal (a deny in the permission set's inline policy, then
        /// `ProvisionPermissionSet`); catalog key `revoke_sessions`, default true.
        revoke_sessions: bool,
    },
    /// `entra_role`.
    EntraRole {
        /// Role definition (template) id.
        role_definition_id: String,
        /// `/` for the whole directory.
        directory_scope_id: String,
    },
    /// `entra_group`.
    EntraGroup {
        /// Group object id.
        group_id: String,
        /// `member` or `owner`.
        access_id: String,
    },
    /// `azure_role`.
    AzureRole {
        /// Management group, subscription or resource group.
        scope: AzureScope,
        /// Role definition GUID, lowercase (written as the full id for the scope).
        role_definition: String,
        /// ABAC condition, passed through (`conditionVersion` 2.0).
        condition: Option<String>,
    },
    /// A `[[bundle]]`: its member entitlements, in the catalog's order (none is a bundle).
    Bundle {
        /// The members.
        members: Vec<Entitlement>,
    },
}

/// Where notifications about an entitlement go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyRoute {
    /// Approver addresses.
    #[serde(default)]
    pub email: Vec<String>,
    /// Post to the Teams webhook.
    #[serde(default)]
    pub teams: bool,
}

/// One catalog entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlement {
    /// Stable id.
    pub id: String,
    /// Human title.
    pub title: String,
    /// Kind.
    pub kind: Kind,
    /// What is granted.
    pub target: Target,
    /// Longest grant, seconds.
    pub max_duration: u64,
    /// Distinct approvals needed; 0 = auto-approve when policy allows.
    pub approvals_required: u32,
    /// How long a request may stay pending, seconds.
    pub pending_ttl: u64,
    /// How far ahead a request's `start_at` may be, seconds (scheduled access).
    pub max_schedule_ahead: u64,
    /// The sign-in must carry MFA and be recent.
    pub require_mfa: bool,
    /// Requesting needs this Entra authentication context (`c1`…`c99`) in the token's `acrs`.
    pub auth_context: Option<String>,
    /// Approving needs this Entra authentication context in the approver's `acrs`.
    pub approve_auth_context: Option<String>,
    /// A ticket reference is required.
    pub require_ticket: bool,
    /// Ticket shape, e.g. `INC-9*`.
    pub ticket_pattern: Option<String>,
    /// How many extensions a grant may get.
    pub max_extensions: u32,
    /// Break-glass may be used (policy decides who).
    pub break_glass: bool,
    /// Notification routes.
    pub notify: NotifyRoute,
    /// Line in the catalog file, for messages.
    pub line: usize,
}

impl Entitlement {
    /// The key of the cloud object a grant of this entitlement creates for `user_key`.
    ///
    /// Two grants with the same key share one upstream object; it is removed
    /// only when no live grant needs it.
    pub fn target_key(&self, user_key: &str) -> String {
        match &self.target {
            Target::AwsRole { role_arn, .. } => format!("aws_role|{role_arn}|{user_key}"),
            Target::AwsIdentityCenter {
                account_id,
                permission_set_arn,
                ..
            } => format!("aws_ic|{account_id}|{permission_set_arn}|{user_key}"),
            Target::EntraRole {
                role_definition_id,
                directory_scope_id,
            } => format!("entra_role|{role_definition_id}|{directory_scope_id}|{user_key}"),
            Target::EntraGroup {
                group_id,
                access_id,
            } => format!("entra_group|{group_id}|{access_id}|{user_key}"),
            Target::AzureRole {
                scope,
                role_definition,
                ..
            } => format!(
                "azure_role|{}|{role_definition}|{user_key}",
                scope.id().to_ascii_lowercase()
            ),
            // The bundle's own key: its members' objects are made and removed by the
            // bundle's grant (a person never holds a bundle and one of its members at once).
            Target::Bundle { .. } => format!("bundle|{}|{user_key}", self.id),
        }
    }

    /// The entitlements a grant of this one makes: its members for a bundle, else itself.
    pub fn members(&self) -> &[Entitlement] {
        match &self.target {
            Target::Bundle { members } => members,
            _ => std::slice::from_ref(self),
        }
    }

    /// Whether a grant of this entitlement makes `member` (itself, or one of its bundle's).
    pub fn grants(&self, member: &str) -> bool {
        self.members().iter().any(|m| m.id == member)
    }
}

impl Entitlement {
    /// The key of the upstream object that the removals of every grantee
    /// of this entitlement's target write together (a role's or permission
    /// set's inline policy of session denies), so that they take turns.
    pub fn policy_key(&self) -> Option<String> {
        match &self.target {
            Target::AwsRole { role_arn, .. } => Some(format!("aws_role_policy|{role_arn}")),
            Target::AwsIdentityCenter {
                permission_set_arn,
                revoke_sessions: true,
                ..
            } => Some(format!("aws_ic_policy|{permission_set_arn}")),
            _ => None,
        }
    }

    /// The [`Entitlement::policy_key`]s of everything a grant of this entitlement makes,
    /// sorted (the order in which a removal locks them).
    pub fn policy_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .members()
            .iter()
            .filter_map(Entitlement::policy_key)
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

#[derive(Deserialize)]
struct CatalogFile {
    #[serde(default)]
    entitlement: Vec<Spanned<RawEntitlement>>,
    #[serde(default)]
    bundle: Vec<Spanned<RawBundle>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBundle {
    id: String,
    title: String,
    entitlements: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntitlement {
    id: String,
    title: String,
    kind: String,
    max_duration: String,
    #[serde(default)]
    approvals_required: u32,
    #[serde(default)]
    pending_ttl: Option<String>,
    #[serde(default)]
    max_schedule_ahead: Option<String>,
    #[serde(default)]
    require_mfa: bool,
    #[serde(default)]
    auth_context: Option<String>,
    #[serde(default)]
    approve_auth_context: Option<String>,
    #[serde(default)]
    require_ticket: bool,
    #[serde(default)]
    ticket_pattern: Option<String>,
    #[serde(default)]
    max_extensions: Option<u32>,
    #[serde(default)]
    break_glass: bool,
    #[serde(default)]
    notify: NotifyRoute,
    // aws_role
    #[serde(default)]
    role_arn: Option<String>,
    #[serde(default)]
    session_policy: Option<String>,
    #[serde(default)]
    session_duration: Option<String>,
    // aws_identity_center
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    permission_set_arn: Option<String>,
    #[serde(default)]
    revoke_sessions: Option<toml::Value>,
    // entra_role
    #[serde(default)]
    role_definition_id: Option<String>,
    #[serde(default)]
    directory_scope_id: Option<String>,
    // entra_group
    #[serde(default)]
    group_id: Option<String>,
    #[serde(default)]
    access_id: Option<String>,
    // azure_role
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    condition: Option<String>,
}

/// Default pending TTL: one hour.
pub const DEFAULT_PENDING_TTL: u64 = 3600;
/// How far ahead a request may be scheduled when the entitlement does not say: 7 days.
pub const DEFAULT_MAX_SCHEDULE_AHEAD: u64 = 7 * 24 * 3600;
/// Default STS session cap: one hour (role chaining).
pub const DEFAULT_SESSION_SECONDS: u64 = 3600;
/// STS minimum session length.
pub const MIN_STS_SECONDS: u64 = 900;
/// STS maximum session length.
pub const MAX_STS_SECONDS: u64 = 43_200;
/// Longest session policy.
pub const MAX_SESSION_POLICY: usize = 2048;

/// The validated catalog, by id.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: BTreeMap<String, Entitlement>,
}

impl Catalog {
    /// Parses and validates a catalog; errors are `file:line: message`.
    pub fn parse(text: &str, file: &str) -> Result<Self, Vec<String>> {
        let parsed: CatalogFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            vec![format!("{file}:{line}: {}", e.message())]
        })?;
        let mut errors = Vec::new();
        let mut entries = BTreeMap::new();
        for spanned in parsed.entitlement {
            let line = line_of(text, spanned.span().start);
            let raw = spanned.into_inner();
            match validate(raw, line) {
                Ok(e) => {
                    if entries.contains_key(&e.id) {
                        errors.push(format!(
                            "{file}:{line}: duplicate entitlement id `{}`",
                            e.id
                        ));
                    } else {
                        entries.insert(e.id.clone(), e);
                    }
                }
                Err(msg) => errors.push(format!("{file}:{line}: {msg}")),
            }
        }
        for spanned in parsed.bundle {
            let line = line_of(text, spanned.span().start);
            match bundle(spanned.into_inner(), &entries, line) {
                Ok(b) if entries.contains_key(&b.id) => errors.push(format!(
                    "{file}:{line}: duplicate id `{}` (bundles and entitlements share ids)",
                    b.id
                )),
                Ok(b) => {
                    entries.insert(b.id.clone(), b);
                }
                Err(msg) => errors.push(format!("{file}:{line}: {msg}")),
            }
        }
        if errors.is_empty() {
            Ok(Self { entries })
        } else {
            Err(errors)
        }
    }

    /// One entry.
    pub fn get(&self, id: &str) -> Option<&Entitlement> {
        self.entries.get(id)
    }

    /// All entries, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Entitlement> {
        self.entries.values()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(1, |t| t.bytes().filter(|b| *b == b'\n').count() + 1)
}

fn duration(field: &str, value: &str) -> Result<u64, String> {
    jit_api::parse_duration(value).map_err(|e| format!("`{field}`: {e}"))
}

/// An Entra authentication context id: `c1` to `c99` (what the tenant's Conditional Access
/// offers; it comes back in the token's `acrs`).
fn auth_context(field: &str, value: Option<String>) -> Result<Option<String>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let number = value.strip_prefix('c').and_then(|n| n.parse::<u8>().ok());
    let canonical = number.is_some_and(|n| (1..=99).contains(&n) && value == format!("c{n}"));
    if canonical {
        Ok(Some(value))
    } else {
        Err(format!(
            "`{field}` `{}` is not an authentication context id (`c1` to `c99`, as Entra names them)",
            value.escape_default()
        ))
    }
}

fn need(field: &str, value: Option<String>, kind: &str) -> Result<String, String> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(format!("`{field}` is required for kind `{kind}`")),
    }
}

fn validate(mut raw: RawEntitlement, line: usize) -> Result<Entitlement, String> {
    let id = std::mem::take(&mut raw.id);
    check_id("entitlement", &id)?;
    let ctx = |m: String| format!("entitlement `{id}`: {m}");
    let kind = Kind::parse(&raw.kind).ok_or_else(|| {
        ctx(format!(
            "unknown kind `{}` (expected aws_role, aws_identity_center, entra_role, entra_group or azure_role)",
            raw.kind
        ))
    })?;
    if kind == Kind::Bundle {
        return Err(ctx(
            "a bundle is written as a `[[bundle]]` with `id`, `title` and `entitlements`"
                .to_owned(),
        ));
    }
    let max_duration = duration("max_duration", &raw.max_duration).map_err(ctx)?;
    let pending_ttl = duration_or(
        "pending_ttl",
        raw.pending_ttl.as_deref(),
        DEFAULT_PENDING_TTL,
    )
    .map_err(ctx)?;
    let max_schedule_ahead = duration_or(
        "max_schedule_ahead",
        raw.max_schedule_ahead.as_deref(),
        DEFAULT_MAX_SCHEDULE_AHEAD,
    )
    .map_err(ctx)?;
    if raw.approvals_required > 10 {
        return Err(ctx("`approvals_required` must be at most 10".to_owned()));
    }
    let target = target(kind, &mut raw).map_err(ctx)?;
    let auth_ctx = auth_context("auth_context", raw.auth_context).map_err(ctx)?;
    let approve_auth_ctx =
        auth_context("approve_auth_context", raw.approve_auth_context).map_err(ctx)?;
    for address in &raw.notify.email {
        if !address.contains('@') || address.contains(['\r', '\n', ',', '<', '>']) {
            return Err(ctx(format!(
                "`notify.email` address `{address}` is not valid"
            )));
        }
    }
    Ok(Entitlement {
        id,
        title: raw.title,
        kind,
        target,
        max_duration,
        approvals_required: raw.approvals_required,
        pending_ttl,
        max_schedule_ahead,
        require_mfa: raw.require_mfa,
        auth_context: auth_ctx,
        approve_auth_context: approve_auth_ctx,
        require_ticket: raw.require_ticket,
        ticket_pattern: raw.ticket_pattern,
        max_extensions: raw.max_extensions.unwrap_or(2),
        break_glass: raw.break_glass,
        notify: raw.notify,
        line,
    })
}

/// Duration `field` in seconds, `default` when not given.
fn duration_or(field: &str, value: Option<&str>, default: u64) -> Result<u64, String> {
    value.map_or(Ok(default), |v| duration(field, v))
}

/// The target fields of an entitlement, in the order a message names the first one set
/// that does not apply to its kind.
const TARGET_FIELDS: [&str; 11] = [
    "role_arn",
    "session_policy",
    "session_duration",
    "account_id",
    "permission_set_arn",
    "role_definition_id",
    "directory_scope_id",
    "group_id",
    "access_id",
    "scope",
    "condition",
];

/// The target fields that apply to `kind`.
fn target_fields_of(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::AwsRole => &["role_arn", "session_policy", "session_duration"],
        Kind::AwsIdentityCenter => &["account_id", "permission_set_arn"],
        Kind::EntraRole => &["role_definition_id", "directory_scope_id"],
        Kind::EntraGroup => &["group_id", "access_id"],
        Kind::AzureRole => &["scope", "role_definition_id", "condition"],
        Kind::Bundle => &[],
    }
}

/// Whether target field `name` is set in `raw`.
fn is_set(raw: &RawEntitlement, name: &str) -> bool {
    match name {
        "role_arn" => raw.role_arn.is_some(),
        "session_policy" => raw.session_policy.is_some(),
        "session_duration" => raw.session_duration.is_some(),
        "account_id" => raw.account_id.is_some(),
        "permission_set_arn" => raw.permission_set_arn.is_some(),
        "role_definition_id" => raw.role_definition_id.is_some(),
        "directory_scope_id" => raw.directory_scope_id.is_some(),
        "group_id" => raw.group_id.is_some(),
        "access_id" => raw.access_id.is_some(),
        "scope" => raw.scope.is_some(),
        "condition" => raw.condition.is_some(),
        _ => false,
    }
}

/// The target of an entitlement of `kind`, its fields taken from `raw`: refused when a
/// field of another kind is set.
fn target(kind: Kind, raw: &mut RawEntitlement) -> Result<Target, String> {
    let k = kind.as_str();
    let applies = target_fields_of(kind);
    if let Some(f) = TARGET_FIELDS
        .iter()
        .find(|f| !applies.contains(f) && is_set(raw, f))
    {
        return Err(format!("`{f}` does not apply to kind `{k}`"));
    }
    if kind != Kind::AwsIdentityCenter && raw.revoke_sessions.is_some() {
        return Err(format!(
            "`revoke_sessions` does not apply to kind `{k}` (only aws_identity_center)"
        ));
    }
    match kind {
        Kind::AwsRole => aws_role_target(raw),
        Kind::AwsIdentityCenter => identity_center_target(raw),
        Kind::EntraRole => Ok(Target::EntraRole {
            role_definition_id: need("role_definition_id", raw.role_definition_id.take(), k)?,
            directory_scope_id: raw
                .directory_scope_id
                .take()
                .unwrap_or_else(|| "/".to_owned()),
        }),
        Kind::EntraGroup => {
            let access_id = raw.access_id.take().unwrap_or_else(|| "member".to_owned());
            if access_id != "member" && access_id != "owner" {
                return Err(format!(
                    "`access_id` must be `member` or `owner`, not `{access_id}`"
                ));
            }
            Ok(Target::EntraGroup {
                group_id: need("group_id", raw.group_id.take(), k)?,
                access_id,
            })
        }
        Kind::AzureRole => azure_target(
            raw.scope.take(),
            raw.role_definition_id.take(),
            raw.condition.take(),
            k,
        ),
        Kind::Bundle => Ok(Target::Bundle {
            members: Vec::new(),
        }),
    }
}

/// The target of an `aws_identity_center`: an account, a permission set and whether its
/// sessions are revoked at the end (on unless `revoke_sessions = false`).
fn identity_center_target(raw: &mut RawEntitlement) -> Result<Target, String> {
    let revoke_sessions = match &raw.revoke_sessions {
        None => true,
        Some(toml::Value::Boolean(b)) => *b,
        Some(other) => {
            return Err(format!(
                "`revoke_sessions` must be true or false, not `{other}`"
            ));
        }
    };
    let k = "aws_identity_center";
    let account_id = need("account_id", raw.account_id.take(), k)?;
    if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`account_id` `{account_id}` must be 12 digits"));
    }
    let permission_set_arn = need("permission_set_arn", raw.permission_set_arn.take(), k)?;
    if !permission_set_arn.starts_with("arn:aws:sso:::permissionSet/") {
        return Err(format!(
            "`permission_set_arn` `{permission_set_arn}` is not a permission set ARN"
        ));
    }
    Ok(Target::AwsIdentityCenter {
        account_id,
        permission_set_arn,
        revoke_sessions,
    })
}

/// The target of an `aws_role`: a role ARN, an optional session policy (JSON) and the
/// session's length.
fn aws_role_target(raw: &mut RawEntitlement) -> Result<Target, String> {
    let role_arn = need("role_arn", raw.role_arn.take(), "aws_role")?;
    if !is_role_arn(&role_arn) {
        return Err(format!(
            "`role_arn` `{role_arn}` is not an IAM role ARN (arn:aws:iam::123456789012:role/Name)"
        ));
    }
    if let Some(policy) = &raw.session_policy {
        if policy.len() > MAX_SESSION_POLICY {
            return Err(format!(
                "`session_policy` is longer than {MAX_SESSION_POLICY} characters"
            ));
        }
        serde_json::from_str::<serde_json::Value>(policy)
            .map_err(|e| format!("`session_policy` is not valid JSON: {e}"))?;
    }
    let session_seconds = duration_or(
        "session_duration",
        raw.session_duration.as_deref(),
        DEFAULT_SESSION_SECONDS,
    )?;
    if !(MIN_STS_SECONDS..=MAX_STS_SECONDS).contains(&session_seconds) {
        return Err("`session_duration` must be between 15m and 12h".to_owned());
    }
    Ok(Target::AwsRole {
        role_arn,
        session_policy: raw.session_policy.take(),
        session_seconds,
    })
}

fn check_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "{what} id `{id}` must be 1-64 characters of a-z, 0-9, - and _"
        ));
    }
    Ok(())
}

/// The one value the members that set it agree on, or why not (`field` names it).
fn agreed(
    bundle: &str,
    field: &str,
    values: impl Iterator<Item = Option<String>>,
) -> Result<Option<String>, String> {
    let mut set: Vec<String> = values.flatten().collect();
    set.sort();
    set.dedup();
    match set.len() {
        0 | 1 => Ok(set.pop()),
        _ => Err(format!(
            "bundle `{bundle}`: its members ask for different `{field}`s ({}): one request cannot meet them all",
            set.iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A `[[bundle]]` as one entitlement that holds the strictest rule of its members: the
/// most approvals, the shortest durations, MFA, a ticket, step-up when any member asks,
/// break-glass only when every member allows it; notifications go to all their routes.
fn bundle(
    raw: RawBundle,
    entries: &BTreeMap<String, Entitlement>,
    line: usize,
) -> Result<Entitlement, String> {
    let id = raw.id;
    check_id("bundle", &id)?;
    let ctx = |m: String| format!("bundle `{id}`: {m}");
    if raw.entitlements.len() < 2 {
        return Err(ctx(
            "`entitlements` must list at least two entitlements".to_owned()
        ));
    }
    let mut members: Vec<Entitlement> = Vec::with_capacity(raw.entitlements.len());
    for name in &raw.entitlements {
        let member = entries
            .get(name)
            .ok_or_else(|| ctx(format!("unknown entitlement `{name}` in `entitlements`")))?;
        if members.iter().any(|m| m.id == *name) {
            return Err(ctx(format!("`{name}` is listed twice in `entitlements`")));
        }
        members.push(member.clone());
    }
    let strictest = |f: fn(&Entitlement) -> u64| members.iter().map(f).min().unwrap_or(0);
    let mut emails: Vec<String> = members
        .iter()
        .flat_map(|m| m.notify.email.iter().cloned())
        .collect();
    emails.sort();
    emails.dedup();
    Ok(Entitlement {
        title: raw.title,
        kind: Kind::Bundle,
        max_duration: strictest(|m| m.max_duration),
        approvals_required: members
            .iter()
            .map(|m| m.approvals_required)
            .max()
            .unwrap_or(0),
        pending_ttl: strictest(|m| m.pending_ttl),
        max_schedule_ahead: strictest(|m| m.max_schedule_ahead),
        require_mfa: members.iter().any(|m| m.require_mfa),
        auth_context: agreed(
            &id,
            "auth_context",
            members.iter().map(|m| m.auth_context.clone()),
        )?,
        approve_auth_context: agreed(
            &id,
            "approve_auth_context",
            members.iter().map(|m| m.approve_auth_context.clone()),
        )?,
        require_ticket: members.iter().any(|m| m.require_ticket),
        ticket_pattern: agreed(
            &id,
            "ticket_pattern",
            members.iter().map(|m| m.ticket_pattern.clone()),
        )?,
        max_extensions: members.iter().map(|m| m.max_extensions).min().unwrap_or(0),
        break_glass: members.iter().all(|m| m.break_glass),
        notify: NotifyRoute {
            email: emails,
            teams: members.iter().any(|m| m.notify.teams),
        },
        line,
        target: Target::Bundle { members },
        id,
    })
}

/// The target of an `azure_role`: a scope of one of the three forms, a role
/// definition valid at it, an optional condition.
fn azure_target(
    scope: Option<String>,
    role_definition_id: Option<String>,
    condition: Option<String>,
    kind: &str,
) -> Result<Target, String> {
    let scope = need("scope", scope, kind)?;
    let scope = AzureScope::parse(&scope).map_err(|e| format!("`scope`: {e}"))?;
    let role = need("role_definition_id", role_definition_id, kind)?;
    let role_definition = role_definition_guid(&role, &scope)?;
    if let Some(c) = &condition
        && (c.trim().is_empty() || c.chars().any(|ch| ch.is_control() && ch != '\t'))
    {
        return Err("`condition` must be a non-blank ABAC condition on one line".to_owned());
    }
    Ok(Target::AzureRole {
        scope,
        role_definition,
        condition,
    })
}

fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    matches!(parts.as_slice(), ["arn", partition, "iam", "", account, resource]
        if partition.starts_with("aws")
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && resource.strip_prefix("role/").is_some_and(|n| !n.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[entitlement]]
id = "aws-prod-admin"
title = "AWS production"
kind = "aws_role"
role_arn = "arn:aws:iam::111111111111:role/JitAdmin"
max_duration = "4h"
approvals_required = 1
pending_ttl = "1h"
require_mfa = true
notify = { email = ["sre@example.com"], teams = true }

[[entitlement]]
id = "ic"
title = "IC"
kind = "aws_identity_center"
account_id = "111111111111"
permission_set_arn = "arn:aws:sso:::permissionSet/ssoins-1/ps-1"
max_duration = "8h"
"#;

    #[test]
    fn a_bundle_takes_the_strictest_rule_of_its_members() {
        let text = format!(
            "{GOOD}\n[[bundle]]\nid = \"both\"\ntitle = \"Both\"\nentitlements = [\"ic\", \"aws-prod-admin\"]\n"
        );
        let c = Catalog::parse(&text, "e.toml").unwrap();
        let b = c.get("both").unwrap();
        assert_eq!(b.kind, Kind::Bundle);
        assert_eq!(b.max_duration, 4 * 3600);
        assert_eq!(b.approvals_required, 1);
        assert!(b.require_mfa);
        assert!(!b.break_glass);
        assert_eq!(b.notify.email, vec!["sre@example.com".to_owned()]);
        let ids: Vec<&str> = b.members().iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["ic", "aws-prod-admin"]);
        assert!(b.grants("ic") && !b.grants("both"));
        assert_eq!(b.policy_keys().len(), 2);
        assert_eq!(b.line, GOOD.lines().count() + 2);
    }

    #[test]
    fn a_bad_bundle_is_refused_with_its_line() {
        let bad = |body: &str| {
            let text = format!("{GOOD}\n[[bundle]]\n{body}\n");
            Catalog::parse(&text, "e.toml").unwrap_err().join("\n")
        };
        let line = GOOD.lines().count() + 2;
        assert_eq!(
            bad("id = \"b\"\ntitle = \"B\"\nentitlements = [\"ic\", \"nosuch\"]"),
            format!("e.toml:{line}: bundle `b`: unknown entitlement `nosuch` in `entitlements`")
        );
        assert_eq!(
            bad("id = \"b\"\ntitle = \"B\"\nentitlements = [\"ic\"]"),
            format!(
                "e.toml:{line}: bundle `b`: `entitlements` must list at least two entitlements"
            )
        );
        assert_eq!(
            bad("id = \"b\"\ntitle = \"B\"\nentitlements = [\"ic\", \"ic\"]"),
            format!("e.toml:{line}: bundle `b`: `ic` is listed twice in `entitlements`")
        );
        assert_eq!(
            bad("id = \"ic\"\ntitle = \"B\"\nentitlements = [\"ic\", \"aws-prod-admin\"]"),
            format!("e.toml:{line}: duplicate id `ic` (bundles and entitlements share ids)")
        );
        let patterns = GOOD
            .replace(
                "pending_ttl = \"1h\"",
                "pending_ttl = \"1h\"\nticket_pattern = \"INC-*\"",
            )
            .replace(
                "max_duration = \"8h\"",
                "max_duration = \"8h\"\nticket_pattern = \"CHG-*\"",
            );
        let text = format!(
            "{patterns}\n[[bundle]]\nid = \"b\"\ntitle = \"B\"\nentitlements = [\"ic\", \"aws-prod-admin\"]\n"
        );
        let errs = Catalog::parse(&text, "e.toml").unwrap_err();
        assert!(
            errs[0].ends_with("bundle `b`: its members ask for different `ticket_pattern`s (`CHG-*`, `INC-*`): one request cannot meet them all"),
            "{errs:?}"
        );
    }

    #[test]
    fn parses_a_good_catalog() {
        let c = Catalog::parse(GOOD, "e.toml").unwrap();
        assert_eq!(c.len(), 2);
        let e = c.get("aws-prod-admin").unwrap();
        assert_eq!(e.max_duration, 4 * 3600);
        assert_eq!(e.line, 2);
        assert!(e.notify.teams);
    }

    #[test]
    fn revoke_sessions_is_for_identity_center_and_on_by_default() {
        let c = Catalog::parse(GOOD, "e.toml").unwrap();
        let revokes = |c: &Catalog| {
            matches!(
                c.get("ic").unwrap().target,
                Target::AwsIdentityCenter {
                    revoke_sessions: true,
                    ..
                }
            )
        };
        assert!(revokes(&c));
        assert!(c.get("ic").unwrap().policy_key().is_some());
        let off = GOOD.replace(
            "max_duration = \"8h\"",
            "max_duration = \"8h\"\nrevoke_sessions = false",
        );
        let c = Catalog::parse(&off, "e.toml").unwrap();
        assert!(!revokes(&c));
        assert_eq!(c.get("ic").unwrap().policy_key(), None);
        let wrong = GOOD.replace(
            "require_mfa = true",
            "require_mfa = true\nrevoke_sessions = true",
        );
        let errs = Catalog::parse(&wrong, "e.toml").unwrap_err();
        assert!(
            errs[0].starts_with("e.toml:2:")
                && errs[0].contains("`revoke_sessions` does not apply to kind `aws_role`"),
            "{errs:?}"
        );
        let bad = GOOD.replace(
            "max_duration = \"8h\"",
            "max_duration = \"8h\"\nrevoke_sessions = \"yes\"",
        );
        let errs = Catalog::parse(&bad, "e.toml").unwrap_err();
        assert!(
            errs[0].contains("revoke_sessions") || errs[0].contains("bool"),
            "{errs:?}"
        );
    }

    #[test]
    fn authentication_contexts_are_entra_ids() {
        let entry = |extra: &str| {
            format!(
                "[[entitlement]]\nid = \"a\"\ntitle = \"A\"\nkind = \"entra_role\"\nrole_definition_id = \"r\"\nmax_duration = \"1h\"\n{extra}"
            )
        };
        let c = Catalog::parse(
            &entry("auth_context = \"c1\"\napprove_auth_context = \"c99\"\n"),
            "e.toml",
        )
        .unwrap();
        let e = c.get("a").unwrap();
        assert_eq!(e.auth_context.as_deref(), Some("c1"));
        assert_eq!(e.approve_auth_context.as_deref(), Some("c99"));
        let plain = Catalog::parse(&entry(""), "e.toml").unwrap();
        assert_eq!(plain.get("a").unwrap().auth_context, None);
        for (extra, field) in [
            ("auth_context = \"c0\"", "auth_context"),
            ("auth_context = \"c100\"", "auth_context"),
            ("auth_context = \"C1\"", "auth_context"),
            ("auth_context = \"c01\"", "auth_context"),
            ("auth_context = \"\"", "auth_context"),
            ("approve_auth_context = \"mfa\"", "approve_auth_context"),
            ("approve_auth_context = \"c1 \"", "approve_auth_context"),
        ] {
            let errors = Catalog::parse(&entry(extra), "e.toml").unwrap_err();
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains(&format!("`{field}`")) && e.contains("c1` to `c99")),
                "{extra}: {errors:?}"
            );
        }
    }

    #[test]
    fn azure_roles_are_validated() {
        const SUB: &str = "38ab2ccc-3747-4567-b36b-9478f5602f0d";
        let entry = |extra: &str| {
            format!(
                "[[entitlement]]\nid = \"az\"\ntitle = \"Azure\"\nkind = \"azure_role\"\nmax_duration = \"4h\"\n{extra}"
            )
        };
        let good = entry(&format!(
            "scope = \"/subscriptions/{SUB}\"\nrole_definition_id = \"B24988AC-6180-42A0-AB88-20F7382DD24C\"\ncondition = \"@Resource[x] StringEquals 'y'\"\n"
        ));
        let c = Catalog::parse(&good, "e.toml").unwrap();
        let e = c.get("az").unwrap();
        assert_eq!(e.kind, Kind::AzureRole);
        let Target::AzureRole {
            scope,
            role_definition,
            condition,
        } = &e.target
        else {
            panic!("{e:?}")
        };
        assert_eq!(scope.id(), format!("/subscriptions/{SUB}"));
        assert_eq!(role_definition, "b24988ac-6180-42a0-ab88-20f7382dd24c");
        assert!(condition.is_some());
        assert_eq!(
            e.target_key("u"),
            format!("azure_role|/subscriptions/{SUB}|b24988ac-6180-42a0-ab88-20f7382dd24c|u")
        );
        for (extra, expect) in [
            (
                "role_definition_id = \"b24988ac-6180-42a0-ab88-20f7382dd24c\"\n",
                "`scope` is required",
            ),
            (
                "scope = \"/subscriptions/x\"\nrole_definition_id = \"b24988ac-6180-42a0-ab88-20f7382dd24c\"\n",
                "not a GUID",
            ),
            (
                &*format!("scope = \"/subscriptions/{SUB}\"\n"),
                "`role_definition_id` is required",
            ),
            (
                &*format!(
                    "scope = \"/subscriptions/{SUB}\"\nrole_definition_id = \"Contributor\"\n"
                ),
                "neither a GUID",
            ),
            (
                &*format!(
                    "scope = \"/providers/Microsoft.Management/managementGroups/mg\"\nrole_definition_id = \"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c\"\n"
                ),
                "not valid at scope",
            ),
            (
                &*format!(
                    "scope = \"/subscriptions/{SUB}\"\nrole_definition_id = \"b24988ac-6180-42a0-ab88-20f7382dd24c\"\ncondition = \" \"\n"
                ),
                "`condition`",
            ),
            (
                &*format!(
                    "scope = \"/subscriptions/{SUB}\"\nrole_definition_id = \"b24988ac-6180-42a0-ab88-20f7382dd24c\"\ngroup_id = \"g\"\n"
                ),
                "`group_id` does not apply",
            ),
        ] {
            let errs = Catalog::parse(&entry(extra), "e.toml").unwrap_err();
            assert!(errs[0].contains(expect), "{extra}: {errs:?}");
        }
        let errs = Catalog::parse(
            &GOOD.replace(
                "max_duration = \"8h\"",
                "max_duration = \"8h\"\nscope = \"/\"",
            ),
            "e.toml",
        )
        .unwrap_err();
        assert!(
            errs[0].contains("`scope` does not apply to kind `aws_identity_center`"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_target_field_of_another_kind_is_refused() {
        let kinds = [
            (
                "aws_role",
                "role_arn = \"arn:aws:iam::123456789012:role/R\"",
            ),
            (
                "aws_identity_center",
                "account_id = \"123456789012\"\npermission_set_arn = \"arn:aws:sso:::permissionSet/ssoins-1/ps-1\"",
            ),
            ("entra_role", "role_definition_id = \"r\""),
            ("entra_group", "group_id = \"g\""),
            (
                "azure_role",
                "scope = \"/subscriptions/00000000-0000-0000-0000-000000000000\"\nrole_definition_id = \"b24988ac-6180-42a0-ab88-20f7382dd24c\"",
            ),
        ];
        for (kind, fields) in kinds {
            let entry = |extra: &str| {
                format!(
                    "[[entitlement]]\nid = \"e\"\ntitle = \"E\"\nkind = \"{kind}\"\nmax_duration = \"1h\"\n{fields}\n{extra}"
                )
            };
            Catalog::parse(&entry(""), "e.toml").unwrap();
            let own = target_fields_of(Kind::parse(kind).unwrap());
            for field in TARGET_FIELDS.iter().filter(|f| !own.contains(f)) {
                let errs =
                    Catalog::parse(&entry(&format!("{field} = \"x\"")), "e.toml").expect_err(field);
                assert!(
                    errs[0].contains(&format!("`{field}` does not apply to kind `{kind}`")),
                    "{kind} + {field}: {errs:?}"
                );
            }
        }
    }

    #[test]
    fn errors_point_at_file_and_line() {
        let bad = GOOD.replace("kind = \"aws_identity_center\"", "kind = \"aws_rol\"");
        let errs = Catalog::parse(&bad, "e.toml").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("e.toml:13: "), "{errs:?}");
        assert!(errs[0].contains("unknown kind `aws_rol`"), "{errs:?}");

        let bad = GOOD.replace("\"4h\"", "\"4 hours\"");
        let errs = Catalog::parse(&bad, "e.toml").unwrap_err();
        assert!(
            errs[0].starts_with("e.toml:2: ") && errs[0].contains("max_duration"),
            "{errs:?}"
        );

        let errs = Catalog::parse("[[entitlement]]\nid = 3\n", "e.toml").unwrap_err();
        assert!(errs[0].starts_with("e.toml:2:"), "{errs:?}");

        let bad = GOOD.replace("role/JitAdmin", "user/JitAdmin");
        assert!(Catalog::parse(&bad, "e.toml").unwrap_err()[0].contains("role_arn"));
    }
}
