//! The webhook's error answers: status, and a JSON body with the reason.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a batch was not accepted; becomes the HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not an audit EventList, Event or JSON lines.
    #[error("{0}")]
    BadRequest(String),
    /// Something on our side failed; the apiserver will retry.
    #[error("{0}")]
    Internal(String),
    /// The outbox cannot take the batch now (disk full, I/O error); the apiserver will retry.
    #[error("cannot store alerts: {0}")]
    Unavailable(String),
    /// Another replica is processing some of the batch's events right now; answering
    /// success could lose them if it fails, so the apiserver is asked to retry.
    #[error("{0} event(s) of this batch are being processed by another replica; retry the batch")]
    InProgressElsewhere(usize),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) | ApiError::InProgressElsewhere(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        crate::telemetry::batch(status.as_u16());
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}
