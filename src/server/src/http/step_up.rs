//! Step-up on pages: a form the service refused with [`StepUp`] sends the person through the
//! identity provider again (the `claims` request for an authentication context, `prompt=login`
//! for MFA, `max_age`), by a page of ours that goes on by GET (a redirect of the form post to the
//! provider would break `form-action 'self'`), keeping what they typed in the pre-login session;
//! the callback moves it into the new session, and the form comes back filled in (`?resume=1`)
//! to be sent again.

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, Web};
use crate::identity::oidc::Require;
use crate::service::step_up::StepUp;

/// What a person had typed in a form a step-up interrupted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Draft {
    /// New request: the entitlement chosen.
    pub entitlement: String,
    /// New request: the duration; extension: the `by`.
    pub duration: String,
    /// New request: the justification.
    pub justification: String,
    /// New request: the ticket.
    pub ticket: String,
    /// New request: break-glass ticked.
    pub break_glass: bool,
    /// A decision's comment.
    pub comment: String,
    /// New request: the scheduled start, as typed.
    pub start_at: String,
}

/// What the provider is asked for, for a refusal `step_up`.
fn require(step_up: &StepUp) -> Require {
    Require {
        fresh_login: step_up.mfa,
        max_age: Some(std::time::Duration::from_secs(step_up.max_age)),
        auth_context: step_up.auth_context.clone(),
    }
}

/// Sends the browser to sign in again as `step_up` asks, then back to `back` (a local path;
/// `?resume=1` is added) with `draft` kept. This answers a form post: the way to the provider
/// is a page of our own that goes on by GET, as `form-action 'self'` wants (`handoff`).
pub(super) async fn sign_in_again(
    web: &Web,
    step_up: &StepUp,
    back: &str,
    draft: Draft,
) -> Result<Response, ApiError> {
    let next = format!("{back}?resume=1");
    let Some((cookie, url)) =
        super::auth::start_sign_in(web, &next, &require(step_up), Some(draft)).await?
    else {
        return Ok(
            Redirect::to(&format!("/login?next={}", super::auth::urlencode(&next))).into_response(),
        );
    };
    let page = super::handoff::leaving(
        super::ui::Chrome::anonymous(web.app.dev),
        "Signing you in again",
        &format!(
            "{}. Your identity provider checks your sign-in, then brings you back to the form as you sent it.",
            step_up.message
        ),
        "Continue to your identity provider",
        url.as_str(),
    );
    Ok(([(header::SET_COOKIE, cookie)], page).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_provider_is_asked_for() {
        let context = StepUp {
            message: String::new(),
            auth_context: Some("c1".to_owned()),
            mfa: false,
            max_age: 3600,
        };
        assert_eq!(
            require(&context),
            Require {
                fresh_login: false,
                max_age: Some(std::time::Duration::from_hours(1)),
                auth_context: Some("c1".to_owned()),
            }
        );
        let mfa = StepUp {
            auth_context: None,
            mfa: true,
            ..context
        };
        assert!(require(&mfa).fresh_login);
        assert_eq!(require(&mfa).auth_context, None);
    }
}
