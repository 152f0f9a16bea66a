//! The buyer's access, for a shop's frontend: `POST /api/entitlements/activate` exchanges a
//! proven, paid order for a signed cookie (HttpOnly, Secure, SameSite=Lax), and
//! `GET /api/entitlements/me` reads it back. The cookie names what the buyer proved — orders,
//! or an address — and when it ends, signed with HMAC-SHA256 (`entitlements.cookie_secret`);
//! it grants nothing by itself: what the buyer may use is read from the store at every check,
//! so a refund revokes access at the next one, and a cookie altered by the client is refused.
//!
//! The proof of an order is its buyer token, which `POST /api/orders` answered to whoever
//! created the order (as Stripe answers a `client_secret`), or the provider's redirect proof
//! (see `proof`). Knowing an order id proves nothing, and neither does an email address
//! typed into an order: a cookie won with an order covers that order's access only, and
//! activating another order adds it to the cookie already held.
//!
//! Access "to everything this address bought" needs the address proven: on any device the
//! buyer asks `POST /api/entitlements/sign-in` `{"email"}`, which emails a link
//! (`entitlements.sign_in_url`) to an address that has access, at most
//! `entitlements.sign_in_per_hour` an hour, and answers 202 the same whether or not it did,
//! so the answer tells nobody who bought; the page the link opens gives its token to
//! `POST /api/entitlements/sign-in/confirm` `{"token"}` for a cookie naming the address. A
//! link works once, for `entitlements.sign_in_ttl_secs`; only its hash is stored.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use super::ApiError;
use super::proof;
use crate::Engine;
use crate::clock::now_ms;
use crate::domain::{EmailAddress, OrderId, token_hash};
use crate::email::Outgoing;

pub const COOKIE: &str = "fulfilld_access";

/// Orders one cookie covers at most; activating more keeps the newest.
const MAX_ORDERS: usize = 20;

/// The claims' form. Version 1 named an address that only an order's email vouched for;
/// those cookies no longer read (the buyer activates again).
const CLAIMS_VERSION: u8 = 2;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    v: u8,
    /// An address the buyer proved (an emailed sign-in link): everything it bought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    /// Orders the buyer proved (their buyer tokens): what each of them bought.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    orders: Vec<String>,
    /// When the cookie ends (ms since the epoch).
    exp: i64,
}

impl Default for Claims {
    fn default() -> Claims {
        Claims {
            v: CLAIMS_VERSION,
            email: None,
            orders: Vec::new(),
            exp: 0,
        }
    }
}

fn mac(secret: &str) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length")
}

/// `claims` as `payload.signature`, both base64url.
fn sign(secret: &str, claims: &Claims) -> String {
    let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    format!("{payload}.{}", B64.encode(m.finalize().into_bytes()))
}

/// The claims of a cookie value this engine signed and that has not ended.
fn verify(secret: &str, value: &str) -> Option<Claims> {
    let (payload, sig) = value.split_once('.')?;
    let sig = B64.decode(sig).ok()?;
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    m.verify_slice(&sig).ok()?;
    let claims: Claims = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
    (claims.v == CLAIMS_VERSION && claims.exp > now_ms()).then_some(claims)
}

/// The access cookie's value in the request, if any.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Activate {
    order_id: String,
    /// The token `POST /api/orders` answered for this order,
    #[serde(default)]
    buyer_token: Option<String>,
    /// or the provider's redirect proof: the provider's name and what its checkout handed
    /// the page (the verify call's payload).
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

async fn activate(
    State(e): State<Arc<Engine>>,
    headers: HeaderMap,
    body: Result<Json<Activate>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body?;
    let id = OrderId::parse("order_id", &b.order_id)?;
    let proof = proof::from_body(
        b.buyer_token.as_deref(),
        b.provider.as_deref(),
        b.payload.as_ref(),
    )?;
    proof::check(&e, &id, proof).await?;
    let order = e
        .store
        .get_order(id.as_str())
        .await?
        .ok_or_else(proof::wrong_proof)?;
    if !order.status.is_paid() {
        return Err(ApiError::conflict(
            "not_paid",
            format!(
                "the order is {}: access is activated once it is paid",
                order.status
            ),
        ));
    }
    // Added to what the buyer's cookie proves already (another order, a signed-in address).
    let mut claims = cookie(&headers)
        .and_then(|v| verify(&e.cookie_secret, v))
        .unwrap_or_default();
    claims.orders.retain(|o| *o != order.id);
    claims.orders.push(order.id);
    if claims.orders.len() > MAX_ORDERS {
        claims.orders.drain(..claims.orders.len() - MAX_ORDERS);
    }
    access_cookie(&e, claims).await
}

/// The buyer's access now, with `Set-Cookie` for a new access cookie carrying `claims`
/// (its end set anew).
async fn access_cookie(e: &Engine, mut claims: Claims) -> Result<Response, ApiError> {
    let days = i64::from(e.config.entitlements.cookie_max_age_days);
    claims.exp = now_ms() + days * 86_400_000;
    let value = sign(&e.cookie_secret, &claims);
    let set = format!(
        "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
        days * 86_400
    );
    let mut r = (StatusCode::OK, Json(me_json(e, &claims).await?)).into_response();
    let v = HeaderValue::from_str(&set).map_err(ApiError::internal)?;
    r.headers_mut().insert(header::SET_COOKIE, v);
    Ok(r)
}

/// What a cookie's claims grant now. `customer_email` is there only when the buyer proved
/// the address.
async fn me_json(e: &Engine, claims: &Claims) -> Result<serde_json::Value, ApiError> {
    let access = e
        .store
        .access(claims.email.as_deref(), &claims.orders)
        .await?;
    Ok(json!({
        "customer_email": claims.email,
        "orders": claims.orders,
        "expires_at": claims.exp,
        "access": access,
    }))
}

async fn me(
    State(e): State<Arc<Engine>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let claims = cookie(&headers)
        .and_then(|v| verify(&e.cookie_secret, v))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "no_access",
                "no valid access cookie: activate one with POST /api/entitlements/activate, \
                 or sign in with POST /api/entitlements/sign-in",
            )
        })?;
    Ok(Json(me_json(&e, &claims).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    email: String,
}

/// `POST /api/entitlements/sign-in`: 202 whatever the address; the email, when one is due,
/// goes out after the answer (a buyer who gets none asks again).
async fn sign_in(
    State(e): State<Arc<Engine>>,
    body: Result<Json<SignIn>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(b) = body?;
    // Kept and sent lowercased: one buyer whatever the case it is typed in.
    let email = EmailAddress::parse("email", &b.email)?
        .as_str()
        .to_lowercase();
    let token = B64.encode(rand::random::<[u8; 32]>());
    let c = &e.config.entitlements;
    let ttl_ms = c.sign_in_ttl_secs.saturating_mul(1000) as i64;
    let kept = e
        .store
        .keep_sign_in(
            &email,
            &token_hash(&token),
            now_ms() + ttl_ms,
            i64::from(c.sign_in_per_hour),
        )
        .await?;
    if kept {
        let e = e.clone();
        tokio::spawn(async move {
            if let Err(err) = send_sign_in(&e, &email, &token).await {
                tracing::warn!(error = %err, "could not send a sign-in email");
            }
        });
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "accepted": true,
            "message": "if this address has access, a sign-in link is on its way",
        })),
    ))
}

async fn send_sign_in(e: &Engine, to: &str, token: &str) -> Result<(), jobs::StepError> {
    let c = &e.config.entitlements;
    let link = c.sign_in_url.replace("{token}", token);
    let minutes = c.sign_in_ttl_secs.div_ceil(60);
    let body = format!(
        "Open this link to see your purchases on this device:\n\n{link}\n\n\
         It works once, for {minutes} minutes. If you did not ask for it, ignore this email: \
         nothing changes.\n"
    );
    // Named after the link (its hash, not the token): each link is one message.
    let id = &token_hash(token)[..16];
    e.mailer
        .send(&Outgoing {
            to,
            subject: "Your sign-in link",
            body: &body,
            message_id: &format!("<sign-in.{id}@fulfilld>"),
            name: &format!("sign-in-{id}"),
        })
        .await
        .map(drop)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirm {
    token: String,
}

/// `POST /api/entitlements/sign-in/confirm`: a link's token → the access cookie.
async fn confirm(
    State(e): State<Arc<Engine>>,
    body: Result<Json<Confirm>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body?;
    let email = e
        .store
        .use_sign_in(&token_hash(b.token.trim()))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_token",
                "this sign-in link does not work: it was used already, has expired, or was \
                 never issued; ask for a new one",
            )
        })?;
    let claims = Claims {
        email: Some(email),
        ..Claims::default()
    };
    access_cookie(&e, claims).await
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/api/entitlements/activate", post(activate))
        .route("/api/entitlements/me", get(me))
        .route("/api/entitlements/sign-in", post(sign_in))
        .route("/api/entitlements/sign-in/confirm", post(confirm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_cookie_reads_back_and_an_altered_or_ended_one_does_not() {
        let c = Claims {
            email: Some("a@example.com".into()),
            orders: vec!["ord_1".into()],
            exp: now_ms() + 60_000,
            ..Claims::default()
        };
        let v = sign("k1", &c);
        let back = verify("k1", &v).expect("reads back");
        assert_eq!(back.email.as_deref(), Some("a@example.com"));
        assert_eq!(back.orders, ["ord_1"]);
        assert!(verify("k2", &v).is_none(), "another key");
        // The payload changed to another buyer, with the old signature.
        let (_, sig) = v.split_once('.').expect("two parts");
        let forged = B64.encode(br#"{"email":"b@example.com","exp":99999999999999}"#);
        assert!(verify("k1", &format!("{forged}.{sig}")).is_none());
        let ended = sign(
            "k1",
            &Claims {
                email: Some("a@example.com".into()),
                exp: now_ms() - 1,
                ..Claims::default()
            },
        );
        assert!(verify("k1", &ended).is_none());
        assert!(verify("k1", "garbage").is_none());
        // A version-1 cookie (an address no one proved), signed with the right key.
        let payload = B64.encode(br#"{"email":"a@example.com","exp":99999999999999}"#);
        let mut m = mac("k1");
        m.update(payload.as_bytes());
        let old = format!("{payload}.{}", B64.encode(m.finalize().into_bytes()));
        assert!(verify("k1", &old).is_none());
    }
}
