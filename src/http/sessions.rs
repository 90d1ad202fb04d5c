//! The session API's routes (docs/session-api.md): JSON in and out, a
//! bearer token on every route, and nothing at all when SESSION_API_TOKEN is
//! unset. Session ids arrive in paths and leave in bodies, never in a log.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{NaiveDateTime, SecondsFormat};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::{ApiError, quiet};
use crate::config::sessions::{MAX_TTL, MIN_TTL};
use crate::sessions::data::{Members, NotAnObject};
use crate::sessions::{SessionApi, metrics, new_session_id};
use crate::store::SessionRow;

/// Session data is a few small values; a body past this is not one.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// `user_sessions.username` is `VARCHAR(50)`; `session_id` `VARCHAR(64)`.
const MAX_USERNAME_CHARS: usize = 50;
const MAX_SESSION_ID_CHARS: usize = 64;

/// The API's routes, to merge into the app's router; none when it is off,
/// so its paths answer 404 like any unknown path and cost nothing.
pub fn routes<S: Clone + Send + Sync + 'static>(api: Option<SessionApi>) -> Router<S> {
    let Some(api) = api else {
        return Router::new();
    };
    Router::new()
        .route("/sessions", post(create))
        .route("/sessions/{id}", get(load).patch(update).delete(end))
        .route("/users/{username}/sessions", get(list).delete(revoke))
        // Before any body is read: an unauthorised upload costs nothing.
        .route_layer(middleware::from_fn_with_state(api.clone(), authorize))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

async fn authorize(State(api): State<SessionApi>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    if api.authorized(authorization) {
        next.run(request).await
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized").into_response()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    username: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    ttl_secs: Option<u64>,
}

async fn create(
    State(api): State<SessionApi>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CreateRequest = parse_body(body)?;
    check_username(&request.username)?;
    let members = match &request.data {
        None => Members::default(),
        Some(data) => object(data)?,
    };
    refuse_reserved(&members)?;
    let lifetime = match request.ttl_secs {
        None => api.ttl,
        Some(secs) => {
            let ttl = Duration::from_secs(secs);
            if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
                return Err(bad_request(
                    "ttl_secs must be from 60 (1 minute) to 34560000 (400 days)",
                ));
            }
            ttl
        }
    };
    let session_id = new_session_id().map_err(|error| {
        tracing::error!(%error, "the OS random source failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })?;
    let row = api
        .store
        .create(
            &session_id,
            &request.username,
            &members.inner_text(),
            lifetime,
            request.ttl_secs.is_some(),
        )
        .await
        .map_err(store_error)?;
    metrics::created();
    let cookie = api.set_cookie(&session_id, lifetime);
    Ok((
        StatusCode::CREATED,
        Json(SessionBody::new(row, Some(cookie))),
    )
        .into_response())
}

async fn load(
    State(api): State<SessionApi>,
    Path(id): Path<String>,
) -> Result<Json<SessionBody>, ApiError> {
    check_session_id(&id)?;
    let row = match api.touch_interval {
        None => api.store.load(&id).await,
        // Boxed: its sqlx future is large, and inline it would make every
        // GET's future as large, copied into a fresh allocation (page
        // faults and all) per request even with sliding expiry off.
        Some(interval) => Box::pin(api.store.load_touching(&id, api.ttl, interval)).await,
    };
    let row = row.map_err(store_error)?.ok_or_else(not_found)?;
    Ok(Json(SessionBody::new(row, None)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRequest {
    data: Box<RawValue>,
}

async fn update(
    State(api): State<SessionApi>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SessionBody>, ApiError> {
    check_session_id(&id)?;
    let request: PatchRequest = parse_body(body)?;
    let patch = object(&request.data)?;
    refuse_reserved(&patch)?;
    let updated = api
        .store
        .update_data(&id, |current| {
            let mut members = match current {
                None => Members::default(),
                Some(text) => Members::parse(text)?,
            };
            members.merge_patch(patch);
            Ok::<_, NotAnObject>(members.to_text())
        })
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    let row = updated.map_err(|NotAnObject| {
        ApiError::new(
            StatusCode::CONFLICT,
            "the session's data is not a JSON object; a merge patch cannot apply to it",
        )
    })?;
    Ok(Json(SessionBody::new(row, None)))
}

async fn end(
    State(api): State<SessionApi>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_session_id(&id)?;
    let lived = api
        .store
        .end(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    metrics::ended("logout", &[lived]);
    Ok(StatusCode::NO_CONTENT)
}

async fn list(
    State(api): State<SessionApi>,
    Path(username): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_username(&username)?;
    let rows = api.store.list(&username).await.map_err(store_error)?;
    let sessions: Vec<SessionBody> = rows
        .into_iter()
        .map(|row| SessionBody::new(row, None))
        .collect();
    Ok(Json(json!({ "sessions": sessions })))
}

#[derive(Deserialize)]
struct RevokeQuery {
    except: Option<String>,
}

async fn revoke(
    State(api): State<SessionApi>,
    Path(username): Path<String>,
    query: Result<Query<RevokeQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_username(&username)?;
    let Query(query) = query.map_err(|_| bad_request("the query string is malformed"))?;
    let lived = api
        .store
        .revoke(&username, query.except.as_deref())
        .await
        .map_err(store_error)?;
    metrics::ended("revoked", &lived);
    Ok(Json(json!({ "ended": lived.len() })))
}

/// A session in an answer; `data` is the stored text itself when it is
/// JSON, so that what the app wrote comes back as written.
#[derive(Serialize)]
struct SessionBody {
    session_id: String,
    username: String,
    data: Box<RawValue>,
    created_at: Option<String>,
    updated_at: Option<String>,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    set_cookie: Option<String>,
}

impl SessionBody {
    fn new(row: SessionRow, set_cookie: Option<String>) -> Self {
        // NULL counts as {} (as for the webhook); text that is not JSON,
        // which the app may have written itself, shows as null.
        let data = match row.session_data {
            None => RawValue::from_string("{}".to_owned()),
            Some(text) => RawValue::from_string(text),
        }
        .unwrap_or_else(|_| RawValue::from_string("null".to_owned()).expect("null is JSON"));
        Self {
            session_id: row.session_id,
            username: row.username,
            data,
            created_at: row.created_at.map(rfc3339),
            updated_at: row.updated_at.map(rfc3339),
            expires_at: rfc3339(row.expires_at),
            set_cookie,
        }
    }
}

fn rfc3339(at: NaiveDateTime) -> String {
    at.and_utc().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_body<T: for<'de> Deserialize<'de>>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body larger than 64 KiB")
        } else {
            ApiError::new(rejection.status(), "could not read the body")
        }
    })?;
    serde_json::from_slice(&body).map_err(|error| {
        // serde's message names the field or the position, never a value.
        bad_request(format!("malformed body: {error}"))
    })
}

fn object(data: &RawValue) -> Result<Members, ApiError> {
    Members::parse(data.get()).map_err(|NotAnObject| bad_request("data must be a JSON object"))
}

fn refuse_reserved(members: &Members) -> Result<(), ApiError> {
    match members.reserved_key() {
        Some(key) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{key:?} belongs to session-worker (the subscription keys); it cannot be set"),
        )),
        None => Ok(()),
    }
}

fn check_username(username: &str) -> Result<(), ApiError> {
    let chars = username.chars().count();
    if chars == 0 || chars > MAX_USERNAME_CHARS {
        return Err(bad_request("username must be 1 to 50 characters"));
    }
    // PostgreSQL's text cannot hold NUL: the statement would fail.
    if username.contains('\0') {
        return Err(bad_request("username must not contain NUL"));
    }
    Ok(())
}

/// An id that cannot be in the table is answered like any unknown one,
/// without a query. (One holding NUL would also fail the statement, and a
/// GET's statement is shared with the other reads of the moment.)
fn check_session_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.chars().count() > MAX_SESSION_ID_CHARS || id.contains('\0') {
        return Err(not_found());
    }
    Ok(())
}

fn not_found() -> ApiError {
    // The same for unknown, expired and ended: an id's history is not told.
    ApiError::new(StatusCode::NOT_FOUND, "session not found")
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// Logged here (a few lines a second at most: in an outage every call of
/// the app fails); the answer stays opaque.
fn store_error(error: sqlx::Error) -> ApiError {
    if let Some(left_out) = quiet::UNAVAILABLE.admit() {
        tracing::error!(%error, left_out, "session store failed");
    }
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            ApiError::unavailable()
        }
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}
