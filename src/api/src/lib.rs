//! The wire contract between the jit broker and its clients.
//!
//! Every JSON body the broker's `/api/v1` sends or accepts is a type here, so
//! the server and the `jit` CLI cannot drift apart. No IO lives in this crate.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub mod duration;
#[cfg(feature = "openapi")]
mod openapi;

pub use duration::{DurationError, format_duration, parse_duration};

/// The state of an access request (SPEC §4).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for approvals.
    Pending,
    /// Approved; the grant is being made.
    Approved,
    /// Approved in advance; the grant is made at `start_at`.
    Scheduled,
    /// The grant exists in the cloud.
    Active,
    /// The grant ran out its window and was removed.
    Expired,
    /// An approver said no.
    Denied,
    /// The requester withdrew it.
    Cancelled,
    /// Nobody decided in time.
    TimedOut,
    /// Ended early by the requester or an admin.
    Revoked,
    /// The grant could not be made; `failure_reason` says why.
    Failed,
}

impl RequestState {
    /// Every state, in lifecycle order.
    pub const ALL: [Self; 10] = [
        Self::Pending,
        Self::Approved,
        Self::Scheduled,
        Self::Active,
        Self::Expired,
        Self::Denied,
        Self::Cancelled,
        Self::TimedOut,
        Self::Revoked,
        Self::Failed,
    ];

    /// The wire name (`timed_out`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Scheduled => "scheduled",
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Denied => "denied",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
            Self::Revoked => "revoked",
            Self::Failed => "failed",
        }
    }

    /// True once nothing can happen to the request any more.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            Self::Pending | Self::Approved | Self::Scheduled | Self::Active
        )
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RequestState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown state `{s}`"))
    }
}

/// One approver's decision on a request.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Who decided (the user's display key, usually the email).
    pub approver: String,
    /// `approve` or `deny`.
    pub decision: Decision,
    /// Optional free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// An approver's verdict.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Counts towards `approvals_required`.
    Approve,
    /// Ends the request at once.
    Deny,
}

/// An access request as the API returns it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Request id.
    pub id: Uuid,
    /// Entitlement id from the catalog.
    pub entitlement: String,
    /// Who asked (email or user name).
    pub requester: String,
    /// Lifecycle state.
    pub state: RequestState,
    /// Asked duration, e.g. `1h30m`.
    pub duration: String,
    /// Asked duration in seconds.
    pub duration_seconds: u64,
    /// Why the access is needed.
    pub justification: String,
    /// Ticket reference, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// When the request was filed.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When a pending request times out.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub pending_until: Option<OffsetDateTime>,
    /// When a scheduled request's grant begins (it then ends at `start_at` + `duration`);
    /// absent for a request that starts once approved.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub start_at: Option<OffsetDateTime>,
    /// When the grant became active.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub activated_at: Option<OffsetDateTime>,
    /// When the grant ends (set once active).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Approvals and denials so far.
    pub approvals: Vec<Approval>,
    /// How many distinct approvals the request needs.
    pub approvals_required: u32,
    /// Granted at once under break-glass.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default)]
    pub break_glass: bool,
    /// The request this one extends, for extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<Uuid>,
    /// Recorded but not made in a real cloud (development mode).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default)]
    pub simulated: bool,
    /// Why the grant failed, for `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Entitlement kind (`aws_role`, …).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default)]
    pub kind: String,
    /// What the entitlement grants, in words: the role, and for Azure the scope by the
    /// names Azure gives it (`Contributor at subscription “Production” (…)`); empty when
    /// the entitlement left the catalog.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default)]
    pub target: String,
}

/// Body of `POST /api/v1/requests`. A field not named here is refused (400), so a misspelt
/// one is an error instead of being dropped.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Entitlement id (or a bundle's: the catalog's ids are shared). Exactly one of
    /// `entitlement` and `bundle` is given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub entitlement: String,
    /// A bundle's id (`[[bundle]]` in the catalog), in place of `entitlement`: one request
    /// for all its entitlements, approved once (by the strictest rule of its members),
    /// granted all or nothing and ended together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// `1h`, `90m`, or a number of seconds.
    pub duration: DurationInput,
    /// Why the access is needed: not blank, at most 4096 bytes, no control characters but
    /// tab and line breaks, no bidirectional controls or invisible format characters (the
    /// pattern lists those of the Basic Multilingual Plane; zero-width joiners are accepted
    /// between two visible characters).
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 4096,
            pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F\\u00AD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B\\u200E\\u200F\\u202A-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB]*$"
        )
    )]
    pub justification: String,
    /// Ticket reference: letters, digits and `- _ # . /`, at most 64; required and
    /// matched against a format by some entitlements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 64, pattern = "^[A-Za-z0-9_#./-]*$")
    )]
    pub ticket: Option<String>,
    /// Ask for break-glass: granted at once, reviewed afterwards.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
    /// Scheduled access: when the grant should begin (RFC 3339, in the future and at most the
    /// entitlement's `max_schedule_ahead`, 7 days unless the catalog says otherwise). The
    /// request is approved in advance, waits as `scheduled`, is granted at this time and ends
    /// at `start_at` + `duration`. Absent: granted as soon as it is approved.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub start_at: Option<OffsetDateTime>,
}

/// A duration as the API accepts it: a string like `1h30m` or seconds as a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DurationInput {
    /// Seconds (a JSON number with no fraction: `900` or `900.0`).
    Seconds(#[serde(deserialize_with = "whole_seconds")] u64),
    /// Human form: `1h`, `30m`, `1h30m`, `45s`, `2d`.
    Text(String),
}

impl DurationInput {
    /// The duration in seconds.
    pub fn seconds(&self) -> Result<u64, DurationError> {
        match self {
            Self::Seconds(s) => parse_duration(&s.to_string()),
            Self::Text(t) => parse_duration(t),
        }
    }
}

/// Reads a whole, non-negative number of seconds. JSON (and JSON Schema's `integer`) counts
/// `900.0` as the integer 900, so a float without fraction is accepted too.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number of seconds")
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }

        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "the value is checked to be whole and within u64 first"
        )]
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
            if v.fract() == 0.0 && v >= 0.0 && v < u64::MAX as f64 {
                Ok(v as u64)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
            }
        }
    }
    d.deserialize_any(Whole)
}

/// Body of `POST /requests/{id}/approve|deny|review|revoke`. A field not named here is
/// refused (400): a reason sent as `reason` is an error, not a silently lost comment.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Optional comment shown to the requester: at most 2048 bytes, no control characters
    /// but tab and line breaks, no bidirectional controls or invisible format characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 2048,
            pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F\\u00AD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B\\u200E\\u200F\\u202A-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB]*$"
        )
    )]
    pub comment: Option<String>,
}

/// Body of `POST /requests/{id}/cancel|credentials|console-url`: these take no field, so the
/// body is empty or `{}`, and any field is refused (400) rather than ignored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

/// Body of `POST /requests/{id}/extend`. A field not named here is refused (400).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// How much longer, e.g. `30m`.
    pub by: DurationInput,
    /// Why; defaults to the original justification. Same rules as a request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 4096,
            pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F\\u00AD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890\\u0891\\u08E2\\u180E\\u200B\\u200E\\u200F\\u202A-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB]*$"
        )
    )]
    pub justification: Option<String>,
}

/// An entitlement the caller may request (`GET /api/v1/entitlements`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    /// Catalog id.
    pub id: String,
    /// Human title.
    pub title: String,
    /// `aws_role`, `aws_identity_center`, `entra_role`, `entra_group`, `azure_role` or
    /// `bundle`.
    pub kind: String,
    /// Longest grant, e.g. `4h`.
    pub max_duration: String,
    /// Distinct approvals needed; 0 = auto-approve.
    pub approvals_required: u32,
    /// The sign-in must carry MFA.
    pub require_mfa: bool,
    /// Requesting it needs this Entra authentication context (`c1`…): `jit` signs in again
    /// asking for it when the broker says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_context: Option<String>,
    /// Whether a ticket reference is required.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default)]
    pub require_ticket: bool,
    /// Whether the caller may use break-glass on it.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default)]
    pub break_glass: bool,
    /// What it grants, in words (see [`Request::target`]).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default)]
    pub target: String,
    /// For a bundle (`kind` `bundle`): the ids of the entitlements it grants together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
}

/// Temporary AWS credentials (`POST /requests/{id}/credentials`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Credentials {
    /// `ASIA…` key id.
    pub access_key_id: String,
    /// Secret key.
    pub secret_access_key: String,
    /// Session token.
    pub session_token: String,
    /// RFC 3339 expiry.
    pub expiration: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Answer of `POST /requests/{id}/console-url`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleUrl {
    /// The AWS federation sign-in URL.
    pub url: String,
}

/// Answer of `POST /api/v1/admin/revoke-sessions`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedSessions {
    /// The IAM role whose sessions were revoked.
    pub role_arn: String,
    /// Sessions issued before this time (RFC 3339) no longer work.
    pub issued_before: String,
}

/// The caller as the broker sees them (`GET /api/v1/me`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    /// Stable user key (`tid/oid` for Entra).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Email or user name.
    pub email: String,
    /// Groups from the token.
    pub groups: Vec<String>,
    /// App roles from the token.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default)]
    pub roles: Vec<String>,
    /// May administer the broker.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default)]
    pub admin: bool,
    /// May read the audit log.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default)]
    pub auditor: bool,
}

/// What the CLI needs to sign in (`GET /api/v1/cli-config`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliConfig {
    /// OpenID issuer.
    pub issuer: String,
    /// Public client id for the device flow.
    pub client_id: String,
    /// Scopes to ask for.
    pub scopes: Vec<String>,
    /// RFC 8628 device authorization endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_authorization_endpoint: Option<String>,
    /// Token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    /// Development mode: sign in with a demo user name, no IdP.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default)]
    pub dev: bool,
}

/// One audit event (`GET /api/v1/audit`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the chain, from 1. For a `pending` event, the position it takes when
    /// chained in the order listed (provisional).
    pub seq: i64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who acted (`system` for the broker itself).
    pub actor: String,
    /// What happened, e.g. `request.approved`.
    pub action: String,
    /// The request it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Uuid>,
    /// The entitlement it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement: Option<String>,
    /// Event details.
    pub data: serde_json::Value,
    /// Hash of the previous event (empty while `pending`).
    pub prev_hash: String,
    /// Hash of this event (empty while `pending`).
    pub hash: String,
    /// PostgreSQL: the event is committed but not chained yet (the broker chains it moments
    /// after its transaction commits); its `seq` is provisional and it has no hashes yet. Absent
    /// (false) for chained events. Pending events are the newest, listed after the chain's head
    /// and never at the end of a page that has a `next`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// A page of audit events.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    /// Events, newest first.
    pub events: Vec<AuditEvent>,
    /// Pass as `before` for the next page (the same as `next`, as a number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
    /// Where the next page starts: pass it as `after` with the same filters.
    /// Absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Outcome of an audit chain verification.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// True when every row checked out.
    pub ok: bool,
    /// Rows checked.
    pub checked: u64,
    /// Last sequence number seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<i64>,
    /// The first sequence number that does not verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<i64>,
    /// What is wrong with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Events written but not chained yet, so not checked (PostgreSQL chains an
    /// event moments after the transaction that wrote it commits; while no broker
    /// runs, they wait).
    #[serde(default)]
    pub pending: u64,
    /// Rows in the table, counted apart from the walk of the chain (absent
    /// when the walk stopped at a bad row). A row the walk cannot reach (a
    /// `seq` of NULL, below 1 or not a whole number) makes `ok` false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Events the broker holds in its spool because the audit store failed
    /// when they happened, not in the chain yet (it replays them in order as
    /// soon as audit writes work again).
    #[serde(default)]
    pub held: u64,
    /// The chain held against the signed checkpoints (absent when none were read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<CheckpointReport>,
    /// The first row whose hash this check recomputed: 1 for a check of the whole chain; for
    /// the broker's check in steps (`GET /api/v1/audit/verify` without `full=true`), the newest
    /// row an earlier check of the same broker verified: rows before it were neither read nor
    /// counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recomputed_from: Option<i64>,
}

/// The audit chain held against its signed checkpoints.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointReport {
    /// Checkpoints whose signature, place in the chain of checkpoints and claim on the
    /// database held.
    pub checked: u64,
    /// The newest checkpoint that covers the chain: everything up to its `seq` is as it was
    /// when it was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<CheckpointInfo>,
    /// Chained events after the newest checkpoint: verified as a chain, not yet covered by a
    /// signature.
    pub not_covered: u64,
    /// The checkpoint that disproves the database (its claim no longer holds there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disproved_by: Option<u64>,
}

/// A signed checkpoint of the audit chain.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// 1, 2, 3, … without gaps.
    pub number: u64,
    /// The newest `seq` of the chain it covers.
    pub seq: i64,
    /// That row's hash.
    pub head_hash: String,
    /// Rows from 1 to `seq` when it was signed.
    pub event_count: u64,
    /// When it was signed.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Which broker signed it.
    pub broker_id: String,
    /// The id of the key that signed it.
    pub key_id: String,
}

/// The error body of every failed API call: `{"error": {"code", "message"}}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an API error.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `not_found`, `forbidden`, `invalid_request`.
    pub code: ErrorCode,
    /// One human sentence.
    pub message: String,
}

/// The machine-readable code of an API error (`error.code`), the same words on the wire as
/// ever; each goes with one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the call is malformed or breaks a rule.
    InvalidRequest,
    /// 401: no valid sign-in.
    Unauthorized,
    /// 401: the sign-in is too weak or too old for this (RFC 9470 challenge in `WWW-Authenticate`).
    StepUpRequired,
    /// 403: the caller may not do this.
    Forbidden,
    /// 404: nothing by that id, or nothing the caller may see.
    NotFound,
    /// 409: the state does not allow it (any more).
    Conflict,
    /// 502: a cloud refused or did not answer (the broker logs what it said).
    UpstreamError,
    /// 503: the audit log cannot be written now, so nothing that needs it is done.
    AuditUnavailable,
    /// 503: a service the broker needs (e.g. the identity provider's keys) does not answer.
    Unavailable,
    /// 500: a row of the audit log cannot be read (changed outside the broker).
    AuditDamaged,
    /// 500: something broke inside the broker (it logs the cause).
    Internal,
    /// A code this client does not know (from a newer broker).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a broker sends.
    pub const ALL: [Self; 11] = [
        Self::InvalidRequest,
        Self::Unauthorized,
        Self::StepUpRequired,
        Self::Forbidden,
        Self::NotFound,
        Self::Conflict,
        Self::UpstreamError,
        Self::AuditUnavailable,
        Self::Unavailable,
        Self::AuditDamaged,
        Self::Internal,
    ];

    /// The wire word, e.g. `not_found`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::Unauthorized => "unauthorized",
            Self::StepUpRequired => "step_up_required",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::UpstreamError => "upstream_error",
            Self::AuditUnavailable => "audit_unavailable",
            Self::Unavailable => "unavailable",
            Self::AuditDamaged => "audit_damaged",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }

    /// Whether trying the same call again later may succeed (the broker or a service behind
    /// it failed, not the call).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::UpstreamError | Self::AuditUnavailable | Self::Unavailable | Self::Internal
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ErrorBody {
    /// Builds an error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

/// How a request's approvals stand, in the words the CLI (`jit show`) and the web pages
/// share: "auto-approved", "none: break-glass" (granted at once, reviewed afterwards), or
/// "1 of 2" (`approved` of `required`).
pub fn approvals_words(required: u32, break_glass: bool, approved: usize) -> String {
    if required == 0 {
        "auto-approved".to_owned()
    } else if break_glass && approved == 0 {
        "none: break-glass".to_owned()
    } else {
        format!("{approved} of {required}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duration(json: &str) -> Result<DurationInput, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Regression (schemathesis): `{"by": 312.0}` is an integer to JSON Schema, so the
    /// broker must not refuse it as malformed.
    #[test]
    fn error_codes_keep_their_wire_words() {
        for code in ErrorCode::ALL {
            let wire = serde_json::to_string(&code).unwrap();
            assert_eq!(wire, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&wire).unwrap(), code);
        }
        let body: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"teapot","message":"short and stout"}}"#)
                .unwrap();
        assert_eq!(body.error.code, ErrorCode::Unknown);
    }

    #[test]
    fn duration_seconds_accept_whole_floats() {
        assert_eq!(duration("312").unwrap(), DurationInput::Seconds(312));
        assert_eq!(duration("312.0").unwrap(), DurationInput::Seconds(312));
        assert_eq!(duration("1e3").unwrap(), DurationInput::Seconds(1000));
        assert_eq!(
            duration("\"1h\"").unwrap(),
            DurationInput::Text("1h".to_owned())
        );
    }

    #[test]
    fn duration_seconds_refuse_fractions_negatives_and_other_types() {
        for bad in ["312.5", "-1", "-1.0", "1e300", "true", "null", "[]", "{}"] {
            assert!(duration(bad).is_err(), "{bad} was accepted");
        }
    }
}
