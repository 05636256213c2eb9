//! Compliance exports: every exchange in a time range, oldest first, as
//! JSON lines or CSV, read page by page (keyset on (created_at, id)) so an
//! export of any size runs in constant memory.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::{Exchange, FieldError, LogStore, Page};
use crate::crypto::Keyring;
use crate::support::timefmt::rfc3339;

const PAGE_ROWS: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "jsonl" => Ok(Self::Jsonl),
            "csv" => Ok(Self::Csv),
            _ => Err(format!("unknown format {s:?}: expected jsonl or csv")),
        }
    }
}

/// The exchange as the API and exports show it: times in RFC 3339; text
/// fields that could not be decrypted are empty and named in
/// `field_errors` (absent when there are none).
#[derive(Serialize)]
pub struct ExchangeView<'a> {
    pub id: &'a str,
    pub session_id: &'a str,
    pub user_id: Option<&'a str>,
    pub channel: &'a str,
    pub user_input: &'a str,
    pub bot_response: &'a str,
    pub model: &'a str,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub latency_ms: i64,
    pub created_at: String,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    pub field_errors: &'a [FieldError],
}

impl<'a> ExchangeView<'a> {
    /// An exchange already opened, with the errors `Exchange::opened` gave.
    pub fn new(e: &'a Exchange, field_errors: &'a [FieldError]) -> Self {
        Self {
            id: &e.id,
            session_id: &e.session_id,
            user_id: e.user_id.as_deref(),
            channel: &e.channel,
            user_input: &e.user_input,
            bot_response: &e.bot_response,
            model: &e.model,
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            latency_ms: e.latency_ms,
            created_at: time_of(e.created_at),
            field_errors,
        }
    }
}

pub fn time_of(ms: i64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

const CSV_HEADER: &str = "id,session_id,user_id,channel,user_input,bot_response,model,\
                          prompt_tokens,completion_tokens,latency_ms,created_at";

/// What an export wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Exported {
    pub rows: u64,
    /// Text fields that could not be decrypted (their key is not in the
    /// keyring, or they fail authentication): written empty; the JSON lines
    /// name them in `field_errors`.
    pub unreadable_fields: u64,
}

/// Writes every exchange with `since <= created_at < until`, its text
/// decrypted with `keyring`.
pub async fn export(
    store: &LogStore,
    keyring: &Keyring,
    since: i64,
    until: i64,
    format: Format,
    out: &mut impl Write,
) -> anyhow::Result<Exported> {
    if format == Format::Csv {
        writeln!(out, "{CSV_HEADER}")?;
    }
    let mut page = Page {
        since: Some(since),
        until: Some(until),
        limit: PAGE_ROWS,
        ..Page::default()
    };
    let mut done = Exported::default();
    loop {
        let rows = store.page(&page).await?;
        let next = rows.last().map(|last| (last.created_at, last.id.clone()));
        let full = rows.len() == PAGE_ROWS as usize;
        for row in rows {
            let (e, errors) = row.opened(keyring);
            done.unreadable_fields += errors.len() as u64;
            match format {
                Format::Jsonl => {
                    serde_json::to_writer(&mut *out, &ExchangeView::new(&e, &errors))?;
                    out.write_all(b"\n")?;
                }
                Format::Csv => writeln!(out, "{}", csv_row(&e))?,
            }
            done.rows += 1;
        }
        match next {
            Some(after) if full => page.after = Some(after),
            _ => break,
        }
    }
    out.flush()?;
    Ok(done)
}

fn csv_row(e: &Exchange) -> String {
    [
        csv_field(&e.id),
        csv_field(&e.session_id),
        csv_field(e.user_id.as_deref().unwrap_or("")),
        csv_field(&e.channel),
        csv_field(&e.user_input),
        csv_field(&e.bot_response),
        csv_field(&e.model),
        e.prompt_tokens.to_string(),
        e.completion_tokens.to_string(),
        e.latency_ms.to_string(),
        time_of(e.created_at),
    ]
    .join(",")
}

/// RFC 4180 quoting. A leading `=`, `+`, `-` or `@` gets a `'` so a
/// spreadsheet opening the export never runs user text as a formula.
fn csv_field(s: &str) -> String {
    let guarded = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"\nbye"), "\"say \"\"hi\"\"\nbye\"");
        assert_eq!(csv_field("=SUM(A1)"), "'=SUM(A1)");
    }

    #[test]
    fn formats_parse() {
        assert_eq!("csv".parse::<Format>(), Ok(Format::Csv));
        assert!("xml".parse::<Format>().is_err());
    }
}
