//! The webhook's error answers: status, a JSON body with the reason, and `Retry-After` on
//! every 429 and 503.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
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

/// Gives a 429 or 503 answer an integer `Retry-After` (whole seconds, at least 1) unless it
/// has one: client-go retries such an answer within the apiserver's attempt.
pub(super) fn with_retry_after(mut response: Response, after: Duration) -> Response {
    let status = response.status();
    let busy = status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
    if busy && !response.headers().contains_key(header::RETRY_AFTER) {
        let secs = HeaderValue::from(after.as_secs().max(1));
        response.headers_mut().insert(header::RETRY_AFTER, secs);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_after(response: &Response) -> Option<&str> {
        let value = response.headers().get(header::RETRY_AFTER)?;
        value.to_str().ok()
    }

    #[test]
    fn every_503_and_429_carries_an_integer_retry_after() {
        let after = Duration::from_millis(2500);
        let unavailable = ApiError::Unavailable("disk full".to_owned()).into_response();
        assert_eq!(
            retry_after(&with_retry_after(unavailable, after)),
            Some("2")
        );
        let elsewhere = ApiError::InProgressElsewhere(3).into_response();
        assert_eq!(retry_after(&with_retry_after(elsewhere, after)), Some("2"));
        let busy = StatusCode::TOO_MANY_REQUESTS.into_response();
        let zero = with_retry_after(busy, Duration::ZERO);
        assert_eq!(retry_after(&zero), Some("1"), "never 0");
        let bad = ApiError::BadRequest("no".to_owned()).into_response();
        assert_eq!(retry_after(&with_retry_after(bad, after)), None);
        let own = (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "7")],
        )
            .into_response();
        assert_eq!(retry_after(&with_retry_after(own, after)), Some("7"));
    }
}
