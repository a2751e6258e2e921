//! Step-up: what the sign-in behind an action must show before the action goes ahead.
//!
//! An entitlement can require, for requesting it, a sign-in that carried MFA (`require_mfa`:
//! `amr` contains `mfa`, for providers that send `amr`) and an Entra authentication context
//! (`auth_context`: the token's `acrs` lists it), and, for approving a request for it, an
//! authentication context of the approver (`approve_auth_context`). Either way the sign-in must
//! be recent: at most `oidc.mfa_max_age` old, where the token says when it happened (`auth_time`:
//! ID tokens do; Entra's access tokens do not, and there the sign-in frequency of the Conditional
//! Access policy behind the context decides). Development mode asks nothing of its demo users.

use std::fmt;

use super::{App, ServiceError};
use crate::domain::User;
use crate::policy::Entitlement;

/// What a new sign-in has to show (the refusal carries it to the HTTP layer: a sign-in through
/// the provider for pages, the RFC 9470 challenge for the API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUp {
    /// Why, for people.
    pub message: String,
    /// The authentication context to ask for (`acrs`), if any.
    pub auth_context: Option<String>,
    /// Multi-factor authentication, recent: a fresh sign-in (`prompt=login`).
    pub mfa: bool,
    /// The oldest acceptable sign-in, seconds (`oidc.mfa_max_age`).
    pub max_age: u64,
}

impl fmt::Display for StepUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What the sign-in showed, for the audit event of the action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Satisfied {
    /// The authentication context required and found in `acrs`.
    pub auth_context: Option<String>,
    /// Unix seconds of the sign-in, when the token says.
    pub auth_time: Option<i64>,
}

impl Satisfied {
    /// Adds `auth_context` and `auth_time` (RFC 3339) to an audit event's data, when known.
    pub fn record(&self, data: &mut serde_json::Value) {
        if let Some(context) = &self.auth_context {
            data["auth_context"] = serde_json::json!(context);
        }
        if let Some(at) = self
            .auth_time
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
        {
            data["auth_time"] = serde_json::json!(at);
        }
    }
}

impl App {
    /// The longest accepted age of a sign-in for step-up, seconds (`oidc.mfa_max_age`).
    pub fn step_up_max_age(&self) -> u64 {
        self.config
            .oidc
            .as_ref()
            .map_or(3600, |o| o.mfa_max_age.secs())
    }

    /// Step-up for requesting (or extending) `ent`: `require_mfa` and `auth_context`.
    pub fn check_step_up(&self, user: &User, ent: &Entitlement) -> Result<Satisfied, ServiceError> {
        self.require(user, &ent.id, ent.require_mfa, ent.auth_context.as_deref())
    }

    /// Step-up for approving a request for `ent`: `approve_auth_context`.
    pub fn check_approve_step_up(
        &self,
        user: &User,
        ent: &Entitlement,
    ) -> Result<Satisfied, ServiceError> {
        self.require(user, &ent.id, false, ent.approve_auth_context.as_deref())
    }

    fn require(
        &self,
        user: &User,
        what: &str,
        mfa: bool,
        context: Option<&str>,
    ) -> Result<Satisfied, ServiceError> {
        if self.dev || (!mfa && context.is_none()) {
            return Ok(Satisfied {
                auth_context: None,
                auth_time: user.auth_time,
            });
        }
        let max_age = self.step_up_max_age();
        let age = user
            .auth_time
            .map(|t| self.now().unix_timestamp().saturating_sub(t));
        let too_old = age.is_some_and(|a| a > i64::try_from(max_age).unwrap_or(i64::MAX));
        let refuse = |message: String| {
            Err(ServiceError::StepUpRequired(StepUp {
                message,
                auth_context: context.map(str::to_owned),
                mfa,
                max_age,
            }))
        };
        if mfa && !user.mfa {
            return refuse(format!(
                "`{what}` requires a sign-in with multi-factor authentication: sign in again"
            ));
        }
        if mfa && (age.is_none() || too_old) {
            return refuse(format!("`{what}` requires a recent sign-in: sign in again"));
        }
        if let Some(context) = context {
            if !user.acrs.iter().any(|c| c == context) {
                return refuse(format!(
                    "`{what}` requires authentication context `{context}`: sign in again to satisfy it"
                ));
            }
            if too_old {
                return refuse(format!(
                    "`{what}` requires authentication context `{context}` from a sign-in at most {} old: sign in again",
                    jit_api::format_duration(max_age)
                ));
            }
        }
        Ok(Satisfied {
            auth_context: context.map(str::to_owned),
            auth_time: user.auth_time,
        })
    }
}
