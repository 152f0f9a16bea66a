//! Calling PayPal: the OAuth token (cached), one authenticated call, orders and captures,
//! the webhook certificate's fetch, and PayPal's error issues.

use super::*;

impl std::fmt::Debug for PayPal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayPal")
            .field("base", &self.base)
            .field("client_id", &self.client_id)
            .field("verification", &self.verification)
            .finish()
    }
}

/// An error's text for PayPal's envelope: name, message, and the detail issues, whose codes
/// (`ORDER_ALREADY_CAPTURED`, `INSTRUMENT_DECLINED`) callers look for.
pub(super) fn error_message(body: &[u8]) -> Option<String> {
    if let Ok(e) = serde_json::from_slice::<wire::ErrorEnvelope>(body) {
        let issues: Vec<&str> = e.details.iter().map(|d| d.issue.as_str()).collect();
        return Some(format!("{}: {} [{}]", e.name, e.message, issues.join(", ")));
    }
    serde_json::from_slice::<wire::OAuthError>(body)
        .ok()
        .map(|e| format!("{}: {}", e.error, e.error_description))
}

pub(super) fn has_issue(e: &ProviderError, issue: &str) -> bool {
    matches!(e, ProviderError::Status { status: 422, message, .. } if message.contains(issue))
}

/// The issue of a 422 from `POST /v2/checkout/orders/{id}/capture` that ends this payment
/// without money (Orders v2 capture errors,
/// <https://developer.paypal.com/docs/api/orders/v2/#orders_capture>, and
/// <https://developer.paypal.com/api/rest/reference/orders/v2/errors/>): the stock goes
/// back and the buyer may pay again (with another funding source, for
/// `INSTRUMENT_DECLINED` and `REDIRECT_PAYER_FOR_ALTERNATE_FUNDING`).
/// `ORDER_ALREADY_CAPTURED` is read again by [`PayPal::capture`]. Any other 422 (e.g.
/// `DUPLICATE_INVOICE_ID`, a setting of the merchant's account) will not change by asking
/// again and is not the buyer's decline: the step stops at once and the order waits for a
/// person with the issue in its error, the buyer's approval and seats kept. 5xx, 429 and
/// transport errors are retried.
pub(super) fn declined_issue(e: &ProviderError) -> Option<&'static str> {
    const DECLINED: [&str; 11] = [
        "INSTRUMENT_DECLINED",
        "REDIRECT_PAYER_FOR_ALTERNATE_FUNDING",
        "PAYER_CANNOT_PAY",
        "PAYER_ACCOUNT_RESTRICTED",
        "PAYER_ACCOUNT_LOCKED_OR_CLOSED",
        "TRANSACTION_REFUSED",
        "MAX_NUMBER_OF_PAYMENT_ATTEMPTS_EXCEEDED",
        "PAYEE_BLOCKED_TRANSACTION",
        "COMPLIANCE_VIOLATION",
        "ORDER_EXPIRED",
        "PAYMENT_DENIED",
    ];
    DECLINED.into_iter().find(|issue| has_issue(e, issue))
}

impl PayPal {
    pub fn new(c: &config::PayPal, http: reqwest::Client) -> PayPal {
        let cert_http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        PayPal {
            http,
            cert_http,
            tolerance_s: i64::try_from(c.webhook_tolerance_secs).unwrap_or(i64::MAX),
            base: c.api_base.trim_end_matches('/').to_owned(),
            client_id: c.client_id.clone(),
            client_secret: c.client_secret.clone(),
            webhook_id: c.webhook_id.clone(),
            verification: c.webhook_verification,
            cert_file: (!c.webhook_cert_file.is_empty())
                .then(|| PathBuf::from(&c.webhook_cert_file)),
            token: tokio::sync::Mutex::new(None),
            keys: Mutex::new(HashMap::new()),
            failed_fetches: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// A valid access token: the cached one, or a new one (kept until a minute before it
    /// expires).
    pub(super) async fn access_token(&self) -> Result<String, ProviderError> {
        let mut slot = self.token.lock().await;
        if let Some((token, until)) = slot.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let req = self
            .http
            .post(format!("{}/v1/oauth2/token", self.base))
            .basic_auth(&self.client_id, Some(self.client_secret.expose()))
            .form(&[("grant_type", "client_credentials")]);
        let t: wire::Token = crate::providers::send_json(NAME, req, error_message).await?;
        let ttl = Duration::from_secs(t.expires_in.saturating_sub(60).max(0) as u64);
        *slot = Some((t.access_token.clone(), Instant::now() + ttl));
        Ok(t.access_token)
    }

    /// One authenticated call. A 401 (token revoked or expired early) drops the cached token
    /// and tries once more with a fresh one.
    pub(super) async fn call<T: serde::de::DeserializeOwned>(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<T, ProviderError> {
        for attempt in 0..2 {
            let token = self.access_token().await?;
            match crate::providers::send_json(
                NAME,
                build(&token).bearer_auth(&token),
                error_message,
            )
            .await
            {
                Err(ProviderError::Status { status: 401, .. }) if attempt == 0 => {
                    *self.token.lock().await = None;
                }
                other => return other,
            }
        }
        Err(ProviderError::Status {
            provider: NAME,
            status: 401,
            message: "the access token was refused twice".into(),
            should_retry: None,
        })
    }

    pub(super) async fn get_order(&self, id: &str) -> Result<wire::Order, ProviderError> {
        let url = format!("{}/v2/checkout/orders/{id}", self.base);
        self.call(|_| self.http.get(&url)).await
    }

    /// Captures an approved order. `PayPal-Request-Id` makes a retried capture return the
    /// first one's result; an order captured meanwhile is read back instead.
    pub(super) async fn capture(&self, id: &str) -> Result<wire::Order, ProviderError> {
        let url = format!("{}/v2/checkout/orders/{id}/capture", self.base);
        let res = self
            .call(|_| {
                self.http
                    .post(&url)
                    .header("PayPal-Request-Id", format!("capture-{id}"))
                    .header("Prefer", "return=representation")
                    .json(&json!({}))
            })
            .await;
        match res {
            Err(e) if has_issue(&e, "ORDER_ALREADY_CAPTURED") => self.get_order(id).await,
            other => other,
        }
    }

    /// The key that signed a webhook: from the configured file, or from `cert_url`.
    pub(super) async fn trusted_key(
        &self,
        cert_url: &str,
        now_s: i64,
    ) -> Result<RsaPublicKey, WebhookError> {
        if let Some(path) = &self.cert_file {
            let name = path.display().to_string();
            let unreadable = |e: std::io::Error| {
                WebhookError::Unavailable(format!("cannot read webhook_cert_file {name}: {e}"))
            };
            let stamp = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .map_err(unreadable)?;
            if let Some(k) = self.cached(&name, Some(stamp), now_s) {
                return Ok(k);
            }
            let pem = std::fs::read(path).map_err(unreadable)?;
            let mut t = key_from_pem(&pem, now_s)
                .map_err(|e| WebhookError::Unavailable(format!("{name}: {e}")))?;
            t.stamp = Some(stamp);
            return Ok(self.remember(name, t, now_s));
        }
        let url = cert_url_allowed(cert_url).map_err(WebhookError::Signature)?;
        self.key_at(&url, now_s).await
    }

    /// The key of the certificate at `url` (already allowed): cached while valid; a failed
    /// fetch answered from memory for [`CERT_FAILURE_TTL`]; one fetch in flight at a time,
    /// so a burst of webhooks naming a new certificate downloads it once.
    pub(super) async fn key_at(
        &self,
        url: &url::Url,
        now_s: i64,
    ) -> Result<RsaPublicKey, WebhookError> {
        if let Some(k) = self.cached(url.as_str(), None, now_s) {
            return Ok(k);
        }
        let recent_failure = || {
            let failed = self
                .failed_fetches
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            failed
                .get(url.as_str())
                .filter(|(until, _)| *until > Instant::now())
                .map(|(_, why)| WebhookError::Unavailable(why.clone()))
        };
        if let Some(err) = recent_failure() {
            return Err(err);
        }
        let _one_at_a_time = self.fetching.lock().await;
        // Another webhook's fetch may have finished while this one waited.
        if let Some(k) = self.cached(url.as_str(), None, now_s) {
            return Ok(k);
        }
        if let Some(err) = recent_failure() {
            return Err(err);
        }
        let fetched = match self.fetch_cert(url).await {
            Ok(pem) => key_from_pem(&pem, now_s).map_err(|e| (e, false)),
            Err(e) => Err((e, true)),
        };
        match fetched {
            Ok(t) => Ok(self.remember(url.to_string(), t, now_s)),
            Err((why, unavailable)) => {
                let why = format!("cannot use the certificate {url}: {why}");
                let mut failed = self
                    .failed_fetches
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if failed.len() >= 1000 {
                    failed.retain(|_, (until, _)| *until > Instant::now());
                }
                failed.insert(
                    url.to_string(),
                    (Instant::now() + CERT_FAILURE_TTL, why.clone()),
                );
                Err(if unavailable {
                    WebhookError::Unavailable(why)
                } else {
                    WebhookError::Signature(why)
                })
            }
        }
    }

    /// A kept key still valid at `now_s` (and, for a file, read at its `stamp`).
    fn cached(&self, k: &str, stamp: Option<SystemTime>, now_s: i64) -> Option<RsaPublicKey> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.get(k)
            .filter(|t| t.not_after_s >= now_s && t.stamp == stamp)
            .map(|t| t.key.clone())
    }

    /// Keeps a certificate's key. PayPal signs with a handful of certificates at a time:
    /// past 64, the ones out of date go, then (if still full) all but the one just read.
    fn remember(&self, k: String, t: TrustedKey, now_s: i64) -> RsaPublicKey {
        let key = t.key.clone();
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= 64 {
            keys.retain(|_, t| t.not_after_s >= now_s);
            if keys.len() >= 64 {
                keys.clear();
            }
        }
        keys.insert(k, t);
        key
    }

    /// The certificate chain at `url`: no redirect followed, at most [`CERT_MAX_BYTES`].
    pub(super) async fn fetch_cert(&self, url: &url::Url) -> Result<Vec<u8>, String> {
        let mut res = self
            .cert_http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("HTTP {}", res.status()));
        }
        let mut pem = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
            if pem.len() + chunk.len() > CERT_MAX_BYTES {
                return Err(format!("larger than {CERT_MAX_BYTES} bytes"));
            }
            pem.extend_from_slice(&chunk);
        }
        Ok(pem)
    }
}
