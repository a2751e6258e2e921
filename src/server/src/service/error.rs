//! What a refused use-case says, as data ([`super::ServiceError`]); each renders the exact
//! text the API and the pages show.

use thiserror::Error;

use jit_api::RequestState;

use crate::domain::IllegalTransition;

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
