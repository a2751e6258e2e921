//! Form posts that lead to another site: sign-out at the identity provider, the AWS console,
//! a step-up sign-in (`http::step_up`).
//!
//! The broker's CSP says `form-action 'self'`, and browsers apply it to every redirect that
//! follows a form submission: a `303` from `POST /logout` to the provider's end-session URL, or
//! from `POST /requests/{id}/console` to the AWS federation endpoint, is blocked (Chromium:
//! "Sending form data to … violates … form-action 'self'"). Listing those origins in
//! `form-action` would not do either: Chromium checks every later redirect of the chain too
//! (AWS federation sends the browser on to a regional console host, an identity provider to
//! wherever its own sign-out goes), and the list would depend on the deployment.
//!
//! So the post is answered with a page of our own ([`leaving`]) that goes on by GET: a
//! `<meta http-equiv="refresh">` (no script needed, no CSP directive governs it) and a link for
//! whoever has refreshes turned off. The page is `no-store`; `Referrer-Policy: same-origin`
//! keeps the broker's URL from the next site.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use uuid::Uuid;

use super::Web;
use super::auth::SignedIn;
use super::ui::{Chrome, UiError};

/// A page that sends the browser on to `url` by GET.
#[derive(Template, WebTemplate)]
#[template(path = "leaving.html")]
struct Leaving<'a> {
    chrome: Chrome,
    title: &'a str,
    message: &'a str,
    link: &'a str,
    url: &'a str,
}

/// The answer to a form post that continues at `url` (another site, or a page of ours).
pub(super) fn leaving(
    chrome: Chrome,
    title: &str,
    message: &str,
    link: &str,
    url: &str,
) -> Response {
    let page = Leaving {
        chrome,
        title,
        message,
        link,
        url,
    };
    ([(header::CACHE_CONTROL, "no-store")], page).into_response()
}

pub(super) fn routes() -> Router<Web> {
    Router::new().route("/simulated/console/{id}", get(simulated_console))
}

/// What the simulated provider's console link shows (development mode).
#[derive(Template, WebTemplate)]
#[template(path = "simulated_console.html")]
struct SimulatedConsole {
    chrome: Chrome,
    id: String,
    entitlement: String,
    expires: String,
}

/// The console "sign-in" of a simulated grant: a page of ours that says so.
async fn simulated_console(
    State(web): State<Web>,
    s: SignedIn,
    Path(id): Path<String>,
) -> Result<SimulatedConsole, UiError> {
    let no_such = || UiError::new(StatusCode::NOT_FOUND, "no such simulated grant");
    let id = Uuid::parse_str(&id).map_err(|_| no_such())?;
    let view = web.app.get_visible(&s.user, id).await?;
    if !view.row.simulated || view.row.requester_key != s.user.key {
        return Err(no_such());
    }
    Ok(SimulatedConsole {
        chrome: Chrome::new(&web, &s).await,
        id: id.to_string(),
        entitlement: view.row.entitlement.clone(),
        expires: view
            .row
            .expires_at
            .map(|t| super::ui::when(t.millis()))
            .unwrap_or_default(),
    })
}
