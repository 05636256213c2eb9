//! `GET /api/v1/conversations`: the conversation log for admins, filtered
//! by user and time, in (created_at, id) order with keyset pagination.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::convlog::export::ExchangeView;
use crate::convlog::{Page, is_valid_exchange_id};
use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::support::timefmt::parse_rfc3339_ms;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 500;

pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    if !caller.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "reading conversation logs needs an admin API key",
        )
        .with_code("admin_required"));
    }
    let page = parse_query(query.as_deref().unwrap_or(""))?;
    let rows = st.logs.store().page(&page).await.map_err(|e| {
        tracing::warn!(error = %e, "conversation log query failed");
        ApiError::unavailable("the conversation log database did not answer; retry")
            .with_code("database_unavailable")
    })?;
    let next_cursor = match rows.last() {
        Some(last) if rows.len() == page.limit as usize => {
            Some(encode_cursor(last.created_at, &last.id))
        }
        _ => None,
    };
    let opened: Vec<_> = rows
        .into_iter()
        .map(|r| r.opened(st.logs.keyring()))
        .collect();
    let data: Vec<ExchangeView> = opened
        .iter()
        .map(|(e, errors)| ExchangeView::new(e, errors))
        .collect();
    Ok(Json(json!({"data": data, "next_cursor": next_cursor})))
}

/// The query string to a page; every bad or unknown parameter is a 400
/// naming it.
pub fn parse_query(query: &str) -> ApiResult<Page> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| ApiError::invalid("query", "the query string is not valid form encoding"))?;
    let mut page = Page {
        limit: DEFAULT_LIMIT,
        ..Page::default()
    };
    for (k, v) in pairs {
        match k.as_str() {
            "user_id" if !v.is_empty() && v.len() <= 256 => page.user_id = Some(v),
            "user_id" => {
                return Err(ApiError::invalid(
                    "user_id",
                    "user_id must be 1 to 256 characters",
                ));
            }
            "since" => page.since = Some(time_param("since", &v)?),
            "until" => page.until = Some(time_param("until", &v)?),
            "limit" => {
                page.limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid("limit", "limit must be an integer from 1 to 500")
                    })?;
            }
            "cursor" => {
                page.after = Some(decode_cursor(&v).ok_or_else(|| {
                    ApiError::invalid(
                        "cursor",
                        "cursor must be a next_cursor value returned by this API",
                    )
                })?);
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    format!(
                        "unknown parameter `{other}`; expected user_id, since, until, limit, cursor"
                    ),
                ));
            }
        }
    }
    if let (Some(s), Some(u)) = (page.since, page.until)
        && s > u
    {
        return Err(ApiError::invalid("until", "until must not be before since"));
    }
    Ok(page)
}

fn time_param(name: &str, v: &str) -> ApiResult<i64> {
    parse_rfc3339_ms(v).ok_or_else(|| {
        ApiError::invalid(
            name,
            format!("{name} must be an RFC 3339 time like 2026-01-31T00:00:00Z"),
        )
    })
}

/// Opaque to clients: hex of `<created_at ms>.<exchange id>`.
fn encode_cursor(created_at: i64, id: &str) -> String {
    hex::encode(format!("{created_at}.{id}"))
}

fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let raw = String::from_utf8(hex::decode(c).ok()?).ok()?;
    let (t, id) = raw.split_once('.')?;
    let t = t.parse::<i64>().ok()?;
    is_valid_exchange_id(id).then(|| (t, id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(q: &str) -> Option<String> {
        parse_query(q).err().and_then(|e| e.param)
    }

    #[test]
    fn parses_filters_and_round_trips_the_cursor() {
        let id = "0123456789abcdef0123456789abcdef";
        let q = format!(
            "user_id=u%201&since=2026-01-01T00:00:00Z&until=2026-02-01T00:00:00Z&limit=7&cursor={}",
            encode_cursor(42, id)
        );
        let p = parse_query(&q).unwrap();
        assert_eq!(p.user_id.as_deref(), Some("u 1"));
        assert_eq!(p.limit, 7);
        assert_eq!(p.after, Some((42, id.to_owned())));
        assert!(p.since.unwrap() < p.until.unwrap());
        assert_eq!(parse_query("").unwrap().limit, 100);
    }

    #[test]
    fn each_bad_parameter_is_named() {
        assert_eq!(param_of("limit=0").as_deref(), Some("limit"));
        assert_eq!(param_of("limit=501").as_deref(), Some("limit"));
        assert_eq!(param_of("limit=x").as_deref(), Some("limit"));
        assert_eq!(param_of("since=yesterday").as_deref(), Some("since"));
        assert_eq!(
            param_of("until=2026-13-01T00:00:00Z").as_deref(),
            Some("until")
        );
        assert_eq!(param_of("cursor=zz").as_deref(), Some("cursor"));
        assert_eq!(
            param_of(&format!("cursor={}", hex::encode("1.short"))).as_deref(),
            Some("cursor")
        );
        assert_eq!(param_of("user_id=").as_deref(), Some("user_id"));
        assert_eq!(param_of("page=2").as_deref(), Some("page"));
        assert_eq!(
            param_of("since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z").as_deref(),
            Some("until")
        );
    }
}
