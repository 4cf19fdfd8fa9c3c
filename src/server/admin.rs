//! The admin API's guard and error answers: `[server.admin]` credentials (a bearer token
//! and/or a Basic user and password), else `[server.auth]`'s, else open, as the webhook
//! is. Any admin route takes the guard with one line: `admin::protect(&state, router)`.
//! [`AdminError`] is the admin API's error answer: a status and `{"error": reason}`
//! naming the field at fault.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use super::auth::AuthSettings;
use super::guard::authenticate_with;
use crate::pipeline::silence::SilenceError;

/// The credentials the admin API takes: `[server.admin]` when it sets any, else the
/// webhook's `[server.auth]` (both unset: open).
pub(super) fn admin_auth(admin: Option<&AuthSettings>, webhook: &AuthSettings) -> AuthSettings {
    admin.filter(|a| a.is_enabled()).unwrap_or(webhook).clone()
}

/// `router` behind the admin credentials (401 with `WWW-Authenticate` without them).
pub(super) fn protect(state: &Arc<AppState>, router: Router) -> Router {
    router.route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
}

async fn authenticate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    authenticate_with(&state.admin_auth, req, next).await
}

/// Why an admin request failed; becomes the HTTP answer `{"error": …}` (with `field` when
/// a field is at fault).
#[derive(Debug, thiserror::Error)]
pub(super) enum AdminError {
    /// 400: a field of the request is wrong.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's path (`matchers[0].op`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// 404: nothing by that id.
    #[error("{0}")]
    NotFound(String),
    /// 503: storage or the shared state is unavailable now; retry.
    #[error("{0}")]
    Unavailable(String),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, field) = match &self {
            AdminError::Invalid { field, .. } => (StatusCode::BAD_REQUEST, Some(field.clone())),
            AdminError::NotFound(_) => (StatusCode::NOT_FOUND, None),
            AdminError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
        };
        let mut body = json!({ "error": self.to_string() });
        if let Some(field) = field {
            body["field"] = json!(field);
        }
        (status, Json(body)).into_response()
    }
}

impl From<SilenceError> for AdminError {
    fn from(err: SilenceError) -> Self {
        match err {
            SilenceError::Invalid { field, reason } => AdminError::Invalid { field, reason },
            SilenceError::NotFound(_) => AdminError::NotFound(err.to_string()),
            SilenceError::Store(_) | SilenceError::Shared(_) => {
                AdminError::Unavailable(err.to_string())
            }
        }
    }
}

impl From<tokio::task::JoinError> for AdminError {
    fn from(err: tokio::task::JoinError) -> Self {
        AdminError::Unavailable(format!("task failed: {err}"))
    }
}
