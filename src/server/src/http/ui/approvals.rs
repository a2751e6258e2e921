//! The approvals page: what waits for the user's decision or review.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::State;
use axum::routing::get;

use super::{Card, Chrome, UiError, card};
use crate::http::Web;
use crate::http::auth::SignedIn;

pub(super) fn routes() -> Router<Web> {
    Router::new().route("/approvals", get(approvals))
}

#[derive(Template, WebTemplate)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    chrome: Chrome,
    pending: Vec<Card>,
    reviews: Vec<Card>,
    decided: Vec<Card>,
}

async fn approvals(State(web): State<Web>, s: SignedIn) -> Result<ApprovalsPage, UiError> {
    let pending = web.app.pending_for(&s.user).await?;
    let reviews = web.app.reviews_for(&s.user).await?;
    let decided = web.app.decided_by(&s.user).await?;
    Ok(ApprovalsPage {
        chrome: Chrome::at(&web, &s, "approvals").await,
        pending: pending
            .iter()
            .map(|v| {
                let mut c = card(&web, v);
                c.others.retain(|m| *m != s.user.email);
                c
            })
            .collect(),
        reviews: reviews.iter().map(|v| card(&web, v)).collect(),
        decided: decided.iter().map(|v| card(&web, v)).collect(),
    })
}
