//! Reading the audit log: pages of events and the chain's verification.
//!
//! Reading the whole log is a privileged act: these functions take the proof
//! that the policies allowed it ([`Authorized<act::Audit>`], made only by the
//! policy module through [`App::authorize_audit`]), so no caller reaches them
//! without a decision. A proof for another action does not do:
//!
//! ```compile_fail
//! # async fn f(app: &jit_server::service::App, user: &jit_server::domain::User) {
//! use jit_server::policy::act;
//! let admin = app.policy.authorize_broker::<act::Admin>(user).unwrap();
//! app.verify_audit(&admin, true).await; // an admin's proof is not an auditor's
//! # }
//! ```
//!
//! while the auditor's does:
//!
//! ```no_run
//! # async fn f(app: &jit_server::service::App, user: &jit_server::domain::User) {
//! let auditor = app.authorize_audit(user).unwrap();
//! app.verify_audit(&auditor, true).await.unwrap();
//! # }
//! ```
//!
//! Anyone may read the events of a request they may see
//! ([`App::request_events`]).

use uuid::Uuid;

use super::{App, ServiceError};
use crate::domain::User;
use crate::policy::{Authorized, act};
use crate::store::StoreError;
use crate::store::audit::export::{self, ExportFormat};
use crate::store::audit::{self, Event, Filter};

impl App {
    /// The proof that `user` may read the whole audit log, or why not.
    pub fn authorize_audit(&self, user: &User) -> Result<Authorized<act::Audit>, ServiceError> {
        self.policy
            .authorize_broker::<act::Audit>(user)
            .map_err(|_| ServiceError::Forbidden(super::Forbidden::Audit))
    }

    /// Events matching `filter`, newest first, from the whole log.
    pub async fn audit_events(
        &self,
        _auditor: &Authorized<act::Audit>,
        filter: &Filter,
    ) -> Result<Vec<Event>, ServiceError> {
        Ok(audit::list(&self.store, filter).await?)
    }

    /// Every event matching `filter`, oldest first, in `format`, streamed a page at a time
    /// ([`export::stream`]): the audit page's download.
    pub fn audit_export(
        &self,
        _auditor: &Authorized<act::Audit>,
        format: ExportFormat,
        filter: Filter,
    ) -> impl futures_util::Stream<Item = Result<Vec<u8>, StoreError>> + Send + 'static {
        export::stream(self.store.clone(), format, filter)
    }

    /// Events matching `filter` about request `id`, which `user` must be
    /// allowed to see (its requester, someone who may decide on it, an
    /// auditor); else not found.
    pub async fn request_events(
        &self,
        user: &User,
        id: Uuid,
        filter: &Filter,
    ) -> Result<Vec<Event>, ServiceError> {
        self.get_visible(user, id).await?;
        let filter = Filter {
            request_id: Some(id),
            ..filter.clone()
        };
        Ok(audit::list(&self.store, &filter).await?)
    }

    /// Verifies the hash chain after chaining everything committed before the call: with
    /// `full`, every row; else from the newest row this broker verified before on
    /// ([`App::check_chain`]). `held` counts events waiting in the spool, and `checkpoints`
    /// names the newest signed checkpoint that covers the chain.
    pub async fn verify_audit(
        &self,
        _auditor: &Authorized<act::Audit>,
        full: bool,
    ) -> Result<jit_api::VerifyReport, ServiceError> {
        audit::caught_up(&self.store).await?;
        self.check_chain(full).await
    }

    /// The access review of `[from_ms, to_ms)` (`store::report`), read from the whole log.
    pub async fn access_review(
        &self,
        _auditor: &Authorized<act::Audit>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<crate::store::report::Row>, ServiceError> {
        Ok(crate::store::report::access(&self.store, from_ms, to_ms).await?)
    }
}
