//! `/healthz` (alive), `/readyz` (database, policies, the IdP's signing keys, no held audit
//! events), `/metrics` (Prometheus).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::Web;
use crate::store::{jobs, requests};

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz(State(web): State<Web>) -> impl IntoResponse {
    let db = web.app.store.ping().await.is_ok();
    let policies = !web.app.policy.catalog.is_empty();
    // The IdP's metadata is discovered at start-up (the broker does not start without it);
    // bearer checks need its signing keys, so readiness asks for them (refetched when stale).
    let (idp_ok, idp) = match &web.auth.mode {
        super::AuthMode::Dev => (true, json!("development sign-in")),
        super::AuthMode::Oidc(identity) => {
            let keys = identity.signing_keys().await;
            (
                keys > 0,
                json!({
                    "issuer": identity.discovery().issuer().to_string(),
                    "signing_keys": keys,
                }),
            )
        }
    };
    // Events held while the audit store failed: new grants would not be
    // recorded (they fail closed), so this broker is not ready for them.
    let held = web.app.spool.waiting_events();
    let status = if db && policies && idp_ok && held == 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "not ready" },
            "database": db,
            "policies": policies,
            "policy_hash": web.app.policy.hash,
            "identity_provider": idp,
            "audit": if held == 0 {
                json!({ "held": 0 })
            } else {
                json!({
                    "held": held,
                    "problem": "the audit store failed: events wait in the spool to be chained",
                })
            },
            "audit_checkpoints": checkpoint_status(&web),
        })),
    )
}

/// The checkpoint writer's state: sinks that fail show here (and in the metrics) but never
/// make the broker unready, since grants do not wait for them.
fn checkpoint_status(web: &Web) -> serde_json::Value {
    let Some(c) = &web.app.checkpoints else {
        return json!("not configured (`audit.signing_key`)");
    };
    let status = c.status();
    json!({
        "key_id": c.public_key().key_id(),
        "newest": status.newest.map(|n| json!({ "number": n.number, "seq": n.seq, "at": crate::clock::to_ms(n.at) })),
        "alarm": status.alarm,
        "sinks": status.sinks.iter().map(|s| json!({
            "sink": s.name, "ok": s.ok, "error": s.error, "backlog": s.backlog,
        })).collect::<Vec<_>>(),
    })
}

/// `jit_audit_checkpoint_alarm`, `jit_audit_checkpoint_age_seconds` and
/// `jit_audit_checkpoint_backlog{sink}` (none without a signing key).
fn checkpoint_gauges(web: &Web, now_ms: i64) -> Vec<crate::metrics::Gauge> {
    let Some(c) = &web.app.checkpoints else {
        return Vec::new();
    };
    let status = c.status();
    #[expect(clippy::cast_precision_loss, reason = "gauges are floats")]
    let age = status.newest.map_or(0.0, |n| {
        (now_ms - crate::clock::to_ms(n.at)).max(0) as f64 / 1000.0
    });
    #[expect(clippy::cast_precision_loss, reason = "gauges are floats")]
    let backlog = status
        .sinks
        .iter()
        .map(|s| (vec![("sink", s.name.clone())], s.backlog as f64))
        .collect();
    vec![
        (
            "jit_audit_checkpoint_alarm",
            "1 while no audit checkpoint was written for 3 intervals while the chain grew, or the chain does not verify.",
            vec![(Vec::new(), if status.alarm.is_some() { 1.0 } else { 0.0 })],
        ),
        (
            "jit_audit_checkpoint_age_seconds",
            "Age of the newest signed audit checkpoint.",
            vec![(Vec::new(), age)],
        ),
        (
            "jit_audit_checkpoint_backlog",
            "Checkpoints not yet written to a sink.",
            backlog,
        ),
    ]
}

async fn metrics(State(web): State<Web>) -> impl IntoResponse {
    let now = web.app.now_ms();
    let states = requests::count_by_state(&web.app.store)
        .await
        .unwrap_or_default();
    let (backlog, oldest) = jobs::backlog(&web.app.store, now)
        .await
        .unwrap_or((0, None));
    #[expect(clippy::cast_precision_loss, reason = "gauges are floats")]
    let mut gauges = vec![
        (
            "jit_requests",
            "Requests by state.",
            states
                .into_iter()
                .map(|(s, n)| (vec![("state", s)], n as f64))
                .collect(),
        ),
        (
            "jit_jobs_due",
            "Jobs due and not yet done.",
            vec![(Vec::new(), backlog as f64)],
        ),
        (
            "jit_audit_held_events",
            "Audit events held in the spool while the audit store fails, not chained yet.",
            vec![(Vec::new(), web.app.spool.waiting_events() as f64)],
        ),
        (
            "jit_scheduler_lag_seconds",
            "Age of the oldest due job.",
            vec![(
                Vec::new(),
                oldest.map_or(0.0, |o| (now - o).max(0) as f64 / 1000.0),
            )],
        ),
    ];
    gauges.extend(checkpoint_gauges(&web, now));
    let body = crate::metrics::render(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
