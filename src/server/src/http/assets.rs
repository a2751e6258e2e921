//! Static assets, embedded in the binary: no inline scripts or styles anywhere.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Web;

const CSS: &str = include_str!("../../../../templates/assets/app.css");
const JS: &str = include_str!("../../../../templates/assets/app.js");
/// A 16×16 icon (jit's blue with a white `j`), so browsers asking for `/favicon.ico` get one.
const ICON: &[u8] = include_bytes!("../../../../templates/assets/favicon.ico");

/// `body` as `content_type`, cached for `max_age` seconds.
fn asset(content_type: &'static str, max_age: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, max_age),
        ],
        body,
    )
        .into_response()
}

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route(
            "/assets/app.css",
            get(|| async {
                asset(
                    "text/css; charset=utf-8",
                    "public, max-age=3600",
                    CSS.as_bytes(),
                )
            }),
        )
        .route(
            "/assets/app.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    "public, max-age=3600",
                    JS.as_bytes(),
                )
            }),
        )
        .route(
            "/favicon.ico",
            get(|| async { asset("image/x-icon", "public, max-age=86400", ICON) }),
        )
}
