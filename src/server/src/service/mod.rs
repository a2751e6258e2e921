//! Use-cases shared by the JSON API, the web UI and the scheduler.
//!
//! Every state change runs in one database transaction together with its
//! audit event (and any notifications it causes): if the audit write fails,
//! nothing changes.

use std::sync::Arc;

use thiserror::Error;
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{RuleError, User};
use crate::policy::PolicySet;
use crate::providers::Providers;
use crate::store::audit::{self as audit_store, NewEvent};
use crate::store::{Store, StoreError, Tx};

pub mod admin;
pub mod audit;
pub mod error;
pub mod grants;
pub mod held;
pub mod lists;
pub mod outbox;
pub mod requests;
pub mod scheduled;
pub mod step;
pub mod step_up;
pub mod wait;

pub use error::{Conflict, Forbidden};

/// Everything the use-cases need; cheap to clone.
#[derive(Clone)]
pub struct App {
    /// The database.
    pub store: Store,
    /// Catalog and Cedar policies.
    pub policy: Arc<PolicySet>,
    /// Grant providers by kind.
    pub providers: Providers,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Configuration.
    pub config: Arc<Config>,
    /// Development mode (`serve --dev`).
    pub dev: bool,
    /// Wakes the scheduler when a job is due now.
    pub wake: Arc<Notify>,
    /// Serialises upstream changes to one object within this broker.
    pub target_locks: Arc<grants::TargetLocks>,
    /// Email and Teams delivery for the outbox.
    pub notifier: Arc<crate::notify::Notifier>,
    /// Where a removal's audit events wait while the audit store fails.
    pub spool: Arc<crate::store::held::Spool>,
    /// How far this broker's verification of the audit chain got ([`App::check_chain`]): in
    /// memory only, never in the database, so nobody who can write the database can move it.
    pub audit_verified: Arc<tokio::sync::Mutex<Option<crate::store::audit::Verified>>>,
    /// The signed checkpoint writer (`[audit]`), when a signing key is configured.
    pub checkpoints: Option<Arc<crate::checkpoint::writer::Checkpointer>>,
}

/// A refused or failed use-case.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// Input is malformed or breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(Forbidden),
    /// Nothing by that id (or not visible to the caller).
    #[error("{0}")]
    NotFound(Missing),
    /// The state does not allow it any more.
    #[error("{0}")]
    Conflict(Conflict),
    /// The sign-in is too weak or too old for this entitlement: what a new one must show.
    #[error("{0}")]
    StepUpRequired(step_up::StepUp),
    /// A cloud said no or did not answer. What it said is logged, never shown: it may name
    /// accounts, roles and policies.
    #[error(
        "could not {call}: the cloud refused or did not answer (the broker logged what it said)"
    )]
    Upstream {
        /// What the broker asked.
        call: UpstreamCall,
        /// What the cloud answered.
        #[source]
        cause: crate::providers::ProviderError,
    },
    /// The audit log cannot be written now, so nothing that needs an audit
    /// row is done (credentials are not minted).
    #[error("the audit log cannot be written right now, so {0}; try again shortly")]
    AuditUnavailable(Unrecorded),
    /// A row of the audit log cannot be read: the table was changed outside
    /// the broker. Says which row; never a secret (the log holds none).
    #[error("{0}")]
    AuditDamaged(String),
    /// Something broke inside; details are logged, not shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// What became of a session the audit log could not record ([`ServiceError::AuditUnavailable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Unrecorded {
    /// None was made (the log was found unwritable first).
    #[error("no session is issued")]
    NotIssued,
    /// One was made, could not be recorded, and was ended again.
    #[error("the session was withdrawn")]
    Withdrawn,
}

/// What was not there ([`ServiceError::NotFound`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Missing {
    /// No request by this id, or none the caller may see.
    #[error("no request `{0}`")]
    Request(Uuid),
    /// No entitlement by this id in the catalog.
    #[error("unknown entitlement `{0}`")]
    Entitlement(String),
    /// No bundle by this id in the catalog.
    #[error("unknown bundle `{0}`")]
    Bundle(String),
    /// A row the store was asked for.
    #[error("not found")]
    Row,
}

/// What the broker asked a cloud to do when it failed ([`ServiceError::Upstream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamCall {
    /// Mint credentials of a grant.
    MintCredentials,
    /// Open a console session of a grant.
    OpenConsole,
    /// End the sessions of a grant.
    EndSessions,
    /// Revoke every session of a role.
    RevokeSessions,
}

impl std::fmt::Display for UpstreamCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::MintCredentials => "mint credentials",
            Self::OpenConsole => "open the console",
            Self::EndSessions => "end the sessions",
            Self::RevokeSessions => "revoke sessions",
        })
    }
}

impl ServiceError {
    /// [`ServiceError::Upstream`] of `call`.
    pub fn upstream(call: UpstreamCall) -> impl FnOnce(crate::providers::ProviderError) -> Self {
        move |cause| Self::Upstream { call, cause }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::Conflict(Conflict::Other(m)),
            StoreError::NotFound => Self::NotFound(Missing::Row),
            e @ StoreError::AuditDamaged(_) => Self::AuditDamaged(e.to_string()),
            other => Self::Internal(other.into()),
        }
    }
}

impl From<RuleError> for ServiceError {
    fn from(e: RuleError) -> Self {
        match e {
            RuleError::SelfApproval | RuleError::AlreadyDecided => {
                Self::Forbidden(Forbidden::Rule(e))
            }
            other => Self::Invalid(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

impl App {
    /// Now.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Now in unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        crate::clock::to_ms(self.now())
    }

    /// Now, as a [`UnixMs`](crate::domain::UnixMs).
    pub fn now_unix(&self) -> crate::domain::UnixMs {
        crate::domain::UnixMs::from_datetime(self.now())
    }

    /// Appends an audit event inside `tx`; returns an id of the event, unique
    /// to it (notifications are keyed by it).
    pub async fn audit(&self, tx: &mut Tx, event: NewEvent<'_>) -> Result<Uuid, ServiceError> {
        audit_store::append(tx, self.now(), self.naming_members(event)).await?;
        Ok(Uuid::now_v7())
    }

    /// Appends audit events inside `tx`, in order, in one statement where the
    /// engine allows; returns an id of each ([`App::audit`]).
    pub async fn audit_all(
        &self,
        tx: &mut Tx,
        events: Vec<NewEvent<'_>>,
    ) -> Result<Vec<Uuid>, ServiceError> {
        let ids = events.iter().map(|_| Uuid::now_v7()).collect();
        let events = events.into_iter().map(|e| self.naming_members(e)).collect();
        audit_store::append_all(tx, self.now(), events).await?;
        Ok(ids)
    }

    /// Records an event that comes with no other change (a credential mint, a
    /// console sign-in, an admin action): a transaction of its own.
    pub async fn audit_alone(&self, event: NewEvent<'_>) -> Result<(), ServiceError> {
        Ok(audit_store::append_alone(&self.store, self.now(), self.naming_members(event)).await?)
    }

    /// An event about a bundle names each of its members too (`members` in its data).
    fn naming_members<'a>(&self, mut event: NewEvent<'a>) -> NewEvent<'a> {
        let bundle = event
            .entitlement
            .and_then(|id| self.policy.catalog.get(id))
            .filter(|e| e.kind == crate::policy::Kind::Bundle);
        if let (Some(bundle), Some(data)) = (bundle, event.data.as_object_mut()) {
            data.entry("members").or_insert_with(|| {
                bundle
                    .members()
                    .iter()
                    .map(|m| serde_json::Value::from(m.id.as_str()))
                    .collect()
            });
        }
        event
    }

    /// Records a sign-in, sign-out or refused sign-in.
    pub async fn audit_auth(
        &self,
        actor: &str,
        action: &str,
        data: serde_json::Value,
        user: Option<&User>,
    ) -> Result<(), ServiceError> {
        let mut tx = self.store.begin().await?;
        if let Some(user) = user {
            crate::store::users::upsert(&mut tx, user, self.now_ms()).await?;
        }
        self.audit(
            &mut tx,
            NewEvent {
                actor,
                action,
                request_id: None,
                entitlement: None,
                data,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the loaded policy set's hash when it differs from the last one recorded.
    pub async fn record_policy_hash(&self) -> Result<bool, ServiceError> {
        let last = audit_store::last_of(&self.store, "policy.loaded").await?;
        let same = last.as_ref().is_some_and(|e| {
            serde_json::from_str::<serde_json::Value>(&e.data)
                .ok()
                .and_then(|v| v.get("hash").and_then(|h| h.as_str()).map(str::to_owned))
                .is_some_and(|h| h == self.policy.hash)
        });
        if same {
            return Ok(false);
        }
        self.audit_alone(
        NewEvent {
            actor: "system",
            action: "policy.loaded",
            request_id: None,
            entitlement: None,
            data: serde_json::json!({
                "hash": self.policy.hash,
                "source": self.policy.source,
                "entitlements": self.policy.catalog.len(),
                "previous_hash": last.and_then(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
                    .and_then(|v| v.get("hash").cloned()),
            }),
        },
        )
        .await?;
        Ok(true)
    }

    /// The audit chain's state for the audit page: [`App::check_chain`] in steps.
    pub async fn audit_state(&self) -> Result<jit_api::VerifyReport, ServiceError> {
        self.check_chain(false).await
    }

    /// Verifies the chain as it stands: in full once (and whenever `full`), then only from
    /// the newest row that passed on ([`audit_store::verify_since`]), with the mark kept in
    /// this broker's memory; one check at a time, so page loads and API calls do not pile up
    /// verifications.
    pub(crate) async fn check_chain(
        &self,
        full: bool,
    ) -> Result<jit_api::VerifyReport, ServiceError> {
        let mut mark = self.audit_verified.lock().await;
        let since = if full { None } else { mark.as_ref() };
        let (mut report, next) = audit_store::verify_since(&self.store, since).await?;
        *mark = next;
        report.held = u64::try_from(self.spool.waiting_events()).unwrap_or(u64::MAX);
        self.attach_checkpoint(&mut report).await?;
        Ok(report)
    }

    /// With a signing key: which recorded checkpoint covers the chain of `report`, checked
    /// with this broker's public key.
    async fn attach_checkpoint(
        &self,
        report: &mut jit_api::VerifyReport,
    ) -> Result<(), ServiceError> {
        if let Some(c) = &self.checkpoints {
            crate::checkpoint::verify::attach_newest(&self.store, c.public_key(), report).await?;
        }
        Ok(())
    }
}
