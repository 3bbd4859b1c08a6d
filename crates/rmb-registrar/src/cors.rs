//! CORS, so browser dashboards can call the registrar as they call node-registrar.
//!
//! node-registrar (`pkg/server/routes.go`) allows every origin, every request header and
//! exposes every response header, with preflights cached for 12 h. We do the same, with
//! two differences, both harmless to its clients: `PATCH` is among the allowed methods
//! (node-registrar leaves it out, so a browser cannot update an account there), and no
//! `Access-Control-Allow-Credentials` (the API uses no cookies, and browsers refuse
//! credentials with the origin `*` anyway).
//!
//! Everything is public data or signed (`X-Auth`), so allowing any origin gives a web
//! page nothing it could not do with `curl`.

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Methods a browser may use (preflight answer).
pub const ALLOW_METHODS: &str = "GET, POST, PATCH, OPTIONS";
/// `*` for browsers that know the wildcard; the two headers the API reads for older ones.
pub const ALLOW_HEADERS: &str = "*, Content-Type, X-Auth";
/// 12 h, as node-registrar.
pub const MAX_AGE_SECS: &str = "43200";

/// Answers preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
/// with 204 and adds the CORS headers to every answer to a request with an `Origin`.
pub async fn layer(req: Request, next: Next) -> Response {
    let has_origin = req.headers().contains_key(header::ORIGIN);
    let preflight = has_origin
        && req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        set(
            &mut response,
            [
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                (header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS),
                (header::ACCESS_CONTROL_MAX_AGE, MAX_AGE_SECS),
            ],
        );
        return response;
    }
    let mut response = next.run(req).await;
    if has_origin {
        set(
            &mut response,
            [
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                (header::ACCESS_CONTROL_EXPOSE_HEADERS, "*"),
            ],
        );
    }
    response
}

fn set<const N: usize>(response: &mut Response, headers: [(HeaderName, &'static str); N]) {
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
}
