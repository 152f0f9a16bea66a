//! The HTTP API's shared edge, for the intake and the admin alike: the one error type. Every error is JSON
//! `{"error": {"code", "message"}}` (plus `field` when one input is at fault) with a stable
//! `code`; anything internal is logged with its cause and answered as an opaque 500 (or 503
//! where the caller should retry).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::Invalid;
use crate::providers::WebhookError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// Our fault: log the cause, tell the caller nothing about it.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_field",
            message: e.to_string(),
            field: Some(e.field),
        }
    }
}

impl From<StoreError> for ApiError {
    /// The store being unreachable is a 503 (retry later; a provider will), not our bug.
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::error!(error = %e, "store unavailable");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store cannot be reached; retry later",
            );
        }
        if e.is_contention() {
            // Two requests wanted the same rows at once; the store undid this one whole.
            tracing::warn!(error = %e, "store busy");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_busy",
                "the store was busy with the same order; retry (nothing was changed)",
            );
        }
        ApiError::internal(e)
    }
}

impl From<crate::queue::QueueError> for ApiError {
    fn from(e: crate::queue::QueueError) -> Self {
        tracing::error!(error = %e, "queue unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_unavailable",
            "the queue cannot be reached; retry later",
        )
    }
}

/// Why a webhook is refused, as the provider (or an admin replaying it) hears it.
impl From<WebhookError> for ApiError {
    fn from(err: WebhookError) -> Self {
        match err {
            WebhookError::Signature(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_signature", m)
            }
            WebhookError::Malformed(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", m)
            }
            WebhookError::Unavailable(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "verification_unavailable",
                m,
            ),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let (status, code) = match &r {
            JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            JsonRejection::BytesRejection(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            _ => (StatusCode::BAD_REQUEST, "invalid_json"),
        };
        // serde's message names the offending field ("missing field `customer_email`",
        // "items[0].qty: invalid type …").
        ApiError::new(status, code, r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({ "code": self.code, "message": self.message });
        if let Some(f) = self.field {
            err["field"] = json!(f);
        }
        (self.status, Json(json!({ "error": err }))).into_response()
    }
}

/// What a path parameter of `expected_type` must be, in the API's words.
fn must_be(expected_type: &str) -> String {
    if expected_type.starts_with(['i', 'u']) {
        "must be a number".to_owned()
    } else {
        format!("must be a {expected_type}")
    }
}

/// Path parameters, like axum's `Path`, whose rejection (text that is not UTF-8, a number
/// that is not one) is a 422 in the API's error shape rather than axum's plain-text 400.
#[derive(Debug)]
pub struct Param<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Param<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        let r = match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => return Ok(Param(v)),
            Err(r) => r,
        };
        // A value that is not what the route wants names its parameter: `id: must be a
        // number`, with `field` set, like every other refused input.
        if let PathRejection::FailedToDeserializePathParams(e) = &r {
            match e.kind() {
                ErrorKind::ParseErrorAtKey {
                    key, expected_type, ..
                } => return Err(Invalid::new(key.as_str(), must_be(expected_type)).into()),
                // A route with one parameter: axum does not say its name, the route does.
                ErrorKind::ParseError { expected_type, .. } => {
                    let raw = axum::extract::RawPathParams::from_request_parts(parts, state).await;
                    let key = raw
                        .ok()
                        .and_then(|r| r.iter().next().map(|(k, _)| k.to_owned()))
                        .unwrap_or_else(|| "path".to_owned());
                    return Err(Invalid::new(key, must_be(expected_type)).into());
                }
                _ => {}
            }
        }
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            r.body_text(),
        ))
    }
}
