//! What a refused use-case says, as data ([`super::ServiceError`]); each renders the exact
//! text the API and the pages show.

use thiserror::Error;

use jit_api::RequestState;

use crate::domain::{IllegalTransition, RuleError};

/// Why the state of a request does not allow a step ([`super::ServiceError::Conflict`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Conflict {
    /// The request left the state the step needs (decided, cancelled, ended…).
    #[error("request is already {0}")]
    Already(RequestState),
    /// The step needs an active grant and the request is in this state.
    #[error("request is {0}, not active")]
    NotActive(RequestState),
    /// A revocation of a grant that has not started yet: it is cancelled instead.
    #[error("request is scheduled, not active: cancel it instead")]
    ScheduledNotActive,
    /// The lifecycle does not allow the move.
    #[error("{0}")]
    Transition(IllegalTransition),
    /// The requested entitlement overlaps one the requester already has open.
    #[error("`{requested}` grants some of what `{open}` grants, and {already}")]
    Overlap {
        /// The entitlement asked for.
        requested: String,
        /// The entitlement of the open request.
        open: String,
        /// What the open request is ([`super::requests::already_open`]).
        already: String,
    },
    /// The grant was extended as often as its entitlement allows.
    #[error("`{entitlement}` allows at most {max} extensions")]
    TooManyExtensions {
        /// The entitlement of the grant.
        entitlement: String,
        /// How many extensions it allows.
        max: u32,
    },
    /// The break-glass grant was reviewed before.
    #[error("this break-glass grant is already reviewed")]
    AlreadyReviewed,
    /// Any other conflict, as the store or a one-off check words it.
    #[error("{0}")]
    Other(String),
}

impl From<IllegalTransition> for Conflict {
    fn from(e: IllegalTransition) -> Self {
        Self::Transition(e)
    }
}

/// Why the caller may not do this ([`super::ServiceError::Forbidden`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Forbidden {
    /// The policy does not let the caller request this entitlement.
    #[error("policy does not allow you to request `{0}`")]
    Request(String),
    /// The policy does not let the caller break glass on this entitlement.
    #[error("policy does not allow you to break glass on `{0}`")]
    BreakGlass(String),
    /// The caller is not an approver of this request.
    #[error("you may not decide on this request")]
    Decide,
    /// The caller may not review this break-glass grant.
    #[error("you may not review this request")]
    Review,
    /// Only the requester cancels a request.
    #[error("only the requester can cancel a request")]
    Cancel,
    /// Only the requester or an admin cancels a scheduled request.
    #[error("only the requester or an admin can cancel a scheduled request")]
    CancelScheduled,
    /// Only the requester or an admin revokes a grant.
    #[error("only the requester or an admin can revoke")]
    Revoke,
    /// Only the requester extends a grant.
    #[error("only the requester can extend a grant")]
    Extend,
    /// Only the grant's owner gets its credentials.
    #[error("only the grant's owner can get its credentials")]
    Credentials,
    /// Only auditors read the audit log.
    #[error("only auditors read the audit log")]
    Audit,
    /// Only admins administer the broker.
    #[error("only admins administer the broker")]
    Admin,
    /// Only admins revoke every session of a role.
    #[error("only admins revoke all sessions")]
    RevokeAll,
    /// A rule of the lifecycle refused it (self-approval, a second decision).
    #[error("{0}")]
    Rule(RuleError),
}
