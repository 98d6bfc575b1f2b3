//! The one place where errors become HTTP responses. Client errors carry a plain-text reason; a 5xx body never
//! shows internals (the cause chain goes to the log instead).

use actix_web::{http::StatusCode, HttpResponse, ResponseError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("database request failed"))
    }
}

/// A publish a topic's policy refuses is a 422 naming the breach.
impl From<crate::policies::CheckError> for ApiError {
    fn from(e: crate::policies::CheckError) -> Self {
        match e {
            crate::policies::CheckError::Refused(breach) => Self::Unprocessable(breach.to_string()),
            crate::policies::CheckError::Database(e) => e.into(),
        }
    }
}

/// An invalid policy is a 400 with its reason.
impl From<crate::policies::PutError> for ApiError {
    fn from(e: crate::policies::PutError) -> Self {
        match e {
            crate::policies::PutError::Invalid(reason) => Self::BadRequest(reason.to_string()),
            crate::policies::PutError::Database(e) => e.into(),
        }
    }
}

/// An operator action that could not be carried out: missing is 404, in the wrong state 409, a bad limit 400.
impl From<crate::operations::OperationError> for ApiError {
    fn from(e: crate::operations::OperationError) -> Self {
        use crate::operations::OperationError as E;
        match e {
            E::NoSubscription(_) | E::NoDelivery(_) => Self::NotFound(e.to_string()),
            E::NotActive { .. } | E::NotDisabled { .. } | E::NotRedeliverable(_) => Self::Conflict(e.to_string()),
            E::Limit => Self::BadRequest(e.to_string()),
            E::Database(e) => e.into(),
        }
    }
}

/// A refused portal credential is a 403 that names nothing; an operator's link for a missing subscription 404.
impl From<crate::portal::PortalError> for ApiError {
    fn from(e: crate::portal::PortalError) -> Self {
        match e {
            crate::portal::PortalError::Refused => Self::Forbidden(e.to_string()),
            crate::portal::PortalError::NoSubscription(_) => Self::NotFound(e.to_string()),
            crate::portal::PortalError::Lifetime => Self::BadRequest(e.to_string()),
            crate::portal::PortalError::Operation(e) => e.into(),
            crate::portal::PortalError::Database(e) => e.into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(e) = self {
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unauthorized(_)) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.content_type("text/plain; charset=utf-8").body(format!("{self}\n"))
    }
}
