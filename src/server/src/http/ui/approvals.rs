//! The approvals page: what waits for the user's decision or review, and
//! what they decided, each list a page at a time.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::routing::get;

use super::pager::{PageQuery, Pager};
use super::{Card, Chrome, UiError, card};
use crate::http::Web;
use crate::http::auth::SignedIn;

/// Entries of each list a page holds.
const PAGE: i64 = 50;

pub(super) fn routes() -> Router<Web> {
    Router::new().route("/approvals", get(approvals))
}

#[derive(Template, WebTemplate)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    chrome: Chrome,
    pending: Vec<Card>,
    pending_pager: Pager,
    reviews: Vec<Card>,
    reviews_pager: Pager,
    decided: Vec<Card>,
    decided_pager: Pager,
}

async fn approvals(
    State(web): State<Web>,
    s: SignedIn,
    RawQuery(query): RawQuery,
) -> Result<ApprovalsPage, UiError> {
    let q = PageQuery::raw("/approvals", query.as_deref());
    let pending = web.app.pending_for(&s.user, q.at("pending")?, PAGE).await?;
    let reviews = web
        .app
        .reviews_page(&s.user, q.at("reviews")?, PAGE)
        .await?;
    let decided = web.app.decided_by(&s.user, q.at("decided")?, PAGE).await?;
    Ok(ApprovalsPage {
        chrome: Chrome::at(&web, &s, "approvals").await,
        pending_pager: q.pager("pending", &pending),
        pending: pending
            .items
            .iter()
            .map(|v| {
                let mut c = card(&web, v);
                c.others.retain(|m| *m != s.user.email);
                c
            })
            .collect(),
        reviews_pager: q.pager("reviews", &reviews),
        reviews: reviews.items.iter().map(|v| card(&web, v)).collect(),
        decided_pager: q.pager("decided", &decided),
        decided: decided.items.iter().map(|v| card(&web, v)).collect(),
    })
}
