//! The OpenAPI 3.1 document of `/api/v1`, served at `/api/v1/openapi.json`.
//!
//! Generated from the code: each handler in [`super::api`] carries a
//! `#[utoipa::path]` with its own outcomes, the wire types of `jit-api` derive
//! their schemas, and [`Common`] adds what every operation shares (the bearer
//! scheme, 401/500/503). In development mode the document also describes
//! `POST /api/v1/dev/token`, which exists only there.

use axum::Json;
use axum::extract::State;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, SchemaFormat, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Components, InfoBuilder, LicenseBuilder, OpenApi, Ref, RefOr, Required};
use utoipa::{Modify, OpenApi as _};

use super::auth::{AuthMode, DEMO_USERS};
use super::{Web, api};

/// Name of the bearer security scheme in the document.
pub const BEARER: &str = "bearer";

/// The document for a broker in development mode (`dev`) or with OpenID Connect.
pub fn spec(dev: bool) -> OpenApi {
    let mut doc = api::ApiDoc::openapi();
    if dev {
        doc.paths
            .add_path_operation("/api/v1/dev/token", vec![HttpMethod::Post], dev_token());
    }
    doc
}

/// This document, for the broker's mode. No token needed.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "get_openapi_document",
    tag = "meta",
    responses((status = 200, description = "this OpenAPI 3.1 document", body = Object)),
)]
pub(super) async fn document(State(web): State<Web>) -> Json<OpenApi> {
    Json(spec(matches!(web.auth.mode, AuthMode::Dev)))
}

/// Title, licence, the bearer scheme and the responses every authenticated
/// operation shares.
pub(super) struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut OpenApi) {
        doc.info = InfoBuilder::new()
            .title("jit broker API")
            .version(env!("CARGO_PKG_VERSION"))
            .description(Some(
                "Just-in-time privileged access: request, approve and use time-boxed grants. \
                 Errors are `{\"error\": {\"code\", \"message\"}}` with the status code. \
                 A body field the operation does not define is refused (400), not ignored, \
                 and so is a query parameter it does not define, where it takes any.",
            ))
            .license(Some(LicenseBuilder::new().name("Apache-2.0").build()))
            .build();
        let components = doc.components.get_or_insert_with(Components::new);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An access token from the identity provider (a JWT, as `jit login` gets \
                         it), or in development mode a token from `POST /api/v1/dev/token`",
                    ))
                    .build(),
            ),
        );
        components.responses.insert(
            "Unauthorized".to_owned(),
            RefOr::T(
                ResponseBuilder::new()
                    .description(
                        "no valid bearer token (`unauthorized`), or the entitlement needs a \
                         stronger or more recent sign-in (`step_up_required`: requesting or \
                         extending an entitlement with `auth_context` or `require_mfa`, \
                         approving one with `approve_auth_context`). Sign in again as the \
                         challenge says, then retry",
                    )
                    .header(
                        "WWW-Authenticate",
                        HeaderBuilder::new()
                            .schema(ObjectBuilder::new().schema_type(Type::String))
                            .description(Some(
                                "`Bearer realm=\"jit\"`; for `step_up_required` the RFC 9470 \
                                 challenge `Bearer realm=\"jit\", \
                                 error=\"insufficient_user_authentication\", \
                                 error_description=\"…\", acr_values=\"c1\", max_age=3600, \
                                 claims=\"…\"`: `acr_values` is the Entra authentication context \
                                 to satisfy (absent for MFA alone), `max_age` the oldest sign-in \
                                 accepted in seconds, `claims` the same context as Entra's own \
                                 claims challenge asks for it (base64 of \
                                 `{\"access_token\":{\"acrs\":{\"essential\":true,\"value\":\"c1\"}}}`)",
                            ))
                            .build(),
                    )
                    .content("application/json", error_content())
                    .build(),
            ),
        );
        components.responses.insert(
            "Unavailable".to_owned(),
            RefOr::T(
                ResponseBuilder::new()
                    .description("the identity provider's signing keys could not be fetched")
                    .content("application/json", error_content())
                    .build(),
            ),
        );
        components.responses.insert(
            "Internal".to_owned(),
            RefOr::T(
                ResponseBuilder::new()
                    .description("internal error; the broker logged the cause")
                    .content("application/json", error_content())
                    .build(),
            ),
        );
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                if op.security.is_some() {
                    add_shared(op, "401", "Unauthorized");
                    add_shared(op, "503", "Unavailable");
                    add_shared(op, "500", "Internal");
                }
            }
        }
    }
}

fn add_shared(op: &mut Operation, status: &str, name: &str) {
    op.responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
}

fn error_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build()
}

/// `POST /api/v1/dev/token` (development mode only; see `auth::dev_token`).
fn dev_token() -> Operation {
    let users: Vec<&str> = DEMO_USERS.iter().map(|u| u.0).collect();
    let body = ObjectBuilder::new()
        .property(
            "user",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(users))
                .description(Some("a demo user")),
        )
        .required("user")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    let token = ObjectBuilder::new()
        .property(
            "access_token",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("the bearer token")),
        )
        .required("access_token")
        .property(
            "token_type",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["Bearer"])),
        )
        .required("token_type")
        .property(
            "expires_in",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(0))
                .description(Some("seconds")),
        )
        .required("expires_in");
    OperationBuilder::new()
        .tag("identity")
        .operation_id(Some("create_dev_token"))
        .summary(Some(
            "A bearer token for a demo user (development mode only).",
        ))
        .request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(body)).build(),
                )
                .required(Some(Required::True))
                .build(),
        ))
        .response(
            "200",
            ResponseBuilder::new()
                .description("a token, valid for the session lifetime")
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(token)).build(),
                )
                .build(),
        )
        .response(
            "400",
            ResponseBuilder::new()
                .description("malformed body, or no such demo user")
                .content("application/json", error_content())
                .build(),
        )
        .response("500", RefOr::Ref(Ref::from_response_name("Internal")))
        .build()
}
