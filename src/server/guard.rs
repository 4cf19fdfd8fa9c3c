//! The credential guard the webhook's routes and the admin API put in front of their
//! handlers: the request's credentials (headers, client certificate, `?token=`) checked
//! against an [`AuthSettings`]; a refusal is a 401 with `WWW-Authenticate`, logged with the
//! client's address, never with what it sent. Calls `server::auth`, `server::listen` (the
//! peer) and `telemetry`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::{AuthSettings, Credentials};
use super::listen::Peer;
use crate::telemetry;

/// The client's address: from the connection layer, or axum's connect info.
pub(super) fn client_addr(req: &Request) -> Option<SocketAddr> {
    req.extensions().get::<Peer>().map(|p| p.addr).or_else(|| {
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
    })
}

/// 401 with `WWW-Authenticate` unless the request carries credentials `auth` takes; the
/// attempt is logged with the client's address, never with what it sent.
pub(super) async fn authenticate_with(auth: &AuthSettings, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<Peer>();
    let subject = peer.and_then(|p| {
        p.client_subject
            .as_deref()
            .map(|s| (s, p.client_cn.as_deref()))
    });
    let query_token = req.uri().query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "token")
            .map(|(_, value)| value.into_owned())
    });
    let given = Credentials {
        authorization: req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
        firehose_access_key: req
            .headers()
            .get(FIREHOSE_ACCESS_KEY)
            .map(HeaderValue::as_bytes),
        client_subject: subject,
        query_token: query_token.as_deref().map(str::as_bytes),
    };
    match auth.check(given) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            let source = client_addr(&req).map_or("unknown".to_owned(), |a| a.to_string());
            tracing::warn!(source = %source, reason = refusal.as_str(), path = %req.uri().path(), "request refused: authentication failed");
            telemetry::auth_failure(refusal.as_str());
            let mut response = (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": "authentication required" })),
            )
                .into_response();
            for challenge in auth.challenges() {
                response.headers_mut().append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            response
        }
    }
}

/// The header Amazon Data Firehose sends its configured access key in.
const FIREHOSE_ACCESS_KEY: &str = "x-amz-firehose-access-key";
