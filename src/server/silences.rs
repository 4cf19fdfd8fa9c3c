//! `/api/v1/silences`: create (`POST`), list (`GET`) and expire (`DELETE /{id}`) runtime
//! silences, behind the admin guard. The work is the pipeline's [`SilenceStore`], run on
//! the blocking pool (it writes the outbox and may call Redis).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use bytes::Bytes;

use super::AppState;
use super::admin::{self, AdminError};
use crate::clock::wall_clock_ms;
use crate::pipeline::SilenceStore;
use crate::pipeline::silence::{NewSilence, SilenceList};

/// The silences API, guarded.
pub(super) fn routes(state: &Arc<AppState>) -> Router {
    let router = Router::new()
        .route("/api/v1/silences", get(list).post(create))
        .route("/api/v1/silences/{id}", delete(expire))
        .with_state(state.clone());
    admin::protect(state, router)
}

/// Runs `op` on the store on the blocking pool.
async fn on_store<T: Send + 'static>(
    state: &Arc<AppState>,
    op: impl FnOnce(&SilenceStore, i64) -> T + Send + 'static,
) -> Result<T, AdminError> {
    let state = state.clone();
    let result = tokio::task::spawn_blocking(move || op(&state.silences, wall_clock_ms())).await?;
    Ok(result)
}

async fn create(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, AdminError> {
    let new = NewSilence::from_json(&body)?;
    let (silence, now) = on_store(&state, move |store, now| {
        store.create(new, now).map(|s| (s, now))
    })
    .await??;
    Ok((StatusCode::CREATED, Json(silence.to_json(now))).into_response())
}

async fn list(State(state): State<Arc<AppState>>) -> Result<Json<SilenceList>, AdminError> {
    let silences = on_store(&state, |store, now| {
        store.list(now).iter().map(|s| s.to_json(now)).collect()
    })
    .await?;
    Ok(Json(SilenceList { silences }))
}

async fn expire(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let (silence, now) = on_store(&state, move |store, now| {
        store.expire(&id, now).map(|s| (s, now))
    })
    .await??;
    Ok(Json(silence.to_json(now)).into_response())
}
