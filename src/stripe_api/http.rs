//! One HTTP exchange with Stripe's API, behind async-stripe's
//! [`StripeClient`] trait.
//!
//! async-stripe's own client (1.0.0-rc.10, `src/hyper/client.rs`) reads
//! only the `Stripe-Should-Retry` header of an answer, so a `429`'s
//! `Retry-After` never reaches its caller, and it collects a body of any
//! size into memory. Its `StripeClient` trait is the documented seam for
//! another HTTP client, so this one sends the same request (the same
//! connector, rustls with ring and webpki roots; the same `Authorization`,
//! `User-Agent`, pinned `Stripe-Version` and `Stripe-Account` headers) and
//! keeps what we need: the status, `Retry-After`, and a body of at most
//! [`MAX_ANSWER_BYTES`].

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, Request, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use stripe_client_core::{CustomizedStripeRequest, StripeClient, StripeClientErr, StripeMethod};

/// Stripe's answers to our reads are a few hundred KB at most (a page of
/// 100 events); anything near this is not one of them.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// One attempt's limit when the request names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(super) struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Ends with `/`; `v1/...` follows.
    base: String,
    /// Marked sensitive: no `Debug` prints it.
    authorization: HeaderValue,
    user_agent: HeaderValue,
    version: HeaderValue,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Why an exchange gave no body to use.
#[derive(Debug)]
pub(super) enum HttpError {
    /// A non-2xx answer.
    Status {
        status: u16,
        /// Stripe's error `type` and `code`, when the body is Stripe's.
        /// (Never its `message`: for 401/403 it quotes part of the key.)
        kind: Option<(String, Option<String>)>,
        /// `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    Timeout,
    /// Connection refused or reset, TLS, a broken body.
    Unreachable(String),
    /// An answer over [`MAX_ANSWER_BYTES`].
    TooLarge,
    /// A request that could not be built.
    Invalid(String),
}

impl StripeClientErr for HttpError {
    fn deserialize_err(message: impl std::fmt::Display) -> Self {
        Self::Invalid(message.to_string())
    }
}

impl Http {
    /// `None` when the key cannot be a header value.
    pub(super) fn new(key: &str, base: &str, user_agent: &str) -> Option<Self> {
        let mut authorization = HeaderValue::try_from(format!("Bearer {key}")).ok()?;
        authorization.set_sensitive(true);
        Some(Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector()),
            base: base.to_owned(),
            authorization,
            user_agent: HeaderValue::try_from(user_agent).ok()?,
            version: HeaderValue::from_static(stripe_shared::version::VERSION.as_str()),
        })
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<Bytes, HttpError> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|error| HttpError::Unreachable(error.to_string()))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_ANSWER_BYTES as u64) {
            return Err(HttpError::TooLarge);
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    HttpError::TooLarge
                } else {
                    HttpError::Unreachable(error.to_string())
                }
            })?
            .to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        Err(HttpError::Status {
            status: status.as_u16(),
            kind: stripe_error_kind(&body),
            retry_after,
        })
    }
}

impl StripeClient for Http {
    type Err = HttpError;

    /// One attempt: retries are the caller's ([`super::StripeApi`]), which
    /// knows the budget.
    async fn execute(&self, request: CustomizedStripeRequest) -> Result<Bytes, HttpError> {
        let (request, config) = request.into_pieces();
        let mut uri = format!("{}v1{}", self.base, request.path);
        if let Some(query) = &request.query {
            uri.push('?');
            uri.push_str(query);
        }
        let method = match request.method {
            StripeMethod::Get => Method::GET,
            StripeMethod::Post => Method::POST,
            StripeMethod::Delete => Method::DELETE,
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::USER_AGENT, self.user_agent.clone())
            .header("stripe-version", self.version.clone());
        if let Some(account) = &config.account_id {
            builder = builder.header("stripe-account", account.as_str());
        }
        if request.body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let body = Full::new(Bytes::from(request.body.unwrap_or_default()));
        let request = builder
            .body(body)
            .map_err(|error| HttpError::Invalid(error.to_string()))?;
        let limit = config.timeout.unwrap_or(DEFAULT_TIMEOUT);
        tokio::time::timeout(limit, self.exchange(request))
            .await
            .unwrap_or(Err(HttpError::Timeout))
    }
}

/// async-stripe's connector: rustls (ring) with webpki roots; plain http
/// only reaches here for a loopback address (the setting says so).
fn connector() -> HttpsConnector<HttpConnector> {
    HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build()
}

/// `Retry-After` as seconds (`2`, `1.5`) or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(86_400.0)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorKind,
}

#[derive(Deserialize)]
struct ErrorKind {
    #[serde(rename = "type")]
    kind: String,
    code: Option<String>,
}

fn stripe_error_kind(body: &[u8]) -> Option<(String, Option<String>)> {
    let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
    Some((parsed.error.kind, parsed.error.code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, value.parse().unwrap());
        headers
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after(&headers("2")), Some(Duration::from_secs(2)));
        assert_eq!(
            retry_after(&headers("0.5")),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            retry_after(&headers("Sun, 06 Nov 1994 08:49:37 GMT")),
            Some(Duration::ZERO)
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let wait = retry_after(&headers(&later)).unwrap();
        assert!(wait > Duration::from_secs(28) && wait <= Duration::from_secs(30));
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&headers("-1")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn only_the_type_and_code_of_stripes_errors_are_kept() {
        let body = br#"{"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "sk_live_****"}}"#;
        assert_eq!(
            stripe_error_kind(body),
            Some(("invalid_request_error".into(), Some("rate_limit".into())))
        );
        assert_eq!(stripe_error_kind(b"<html>502</html>"), None);
    }
}
