//! The JSON log line: one object per event, in the shape of
//! tracing-subscriber's `json().flatten_event(true).with_current_span(true)`
//! (timestamp, level, the event's fields, target, then the current span's
//! fields and name), written straight into one buffer.
//!
//! The stock formatter parses the JSON text it stored for the span's fields
//! back into a map on every line, and formats the timestamp through a
//! date-time type: together most of what logging a request cost. This one
//! splices the stored text as it is. A test holds it to the stock output.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Use with `JsonFields` as the field formatter (spans' stored fields are
/// then a JSON object's text).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Straight into the layer's own line buffer: no buffer of ours.
        let meta = event.metadata();
        w.write_str("{\"timestamp\":\"")?;
        crate::timefmt::write_rfc3339_micros(&mut w, SystemTime::now())?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(meta.level().as_str())?;
        w.write_char('"')?;
        let mut fields = Fields {
            out: &mut w,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str(",\"target\":")?;
        write_json_str(&mut w, meta.target())?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            w.write_str(",\"span\":{")?;
            if let Some(stored) = span.extensions().get::<FormattedFields<N>>() {
                let inner = stored
                    .fields
                    .trim()
                    .strip_prefix('{')
                    .and_then(|f| f.strip_suffix('}'))
                    .unwrap_or_default()
                    .trim();
                if !inner.is_empty() {
                    w.write_str(inner)?;
                    w.write_char(',')?;
                }
            }
            w.write_str("\"name\":")?;
            write_json_str(&mut w, span.name())?;
            w.write_char('}')?;
        }
        w.write_str("}\n")
    }
}

/// An event's fields as `,"name":value` pairs, typed as the stock
/// formatter types them (Debug-formatted values become strings). A visitor
/// cannot fail, so the first error is kept for the caller.
struct Fields<'a, W: fmt::Write> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> Fields<'_, W> {
    fn pair(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self
                .out
                .write_char(',')
                .and_then(|()| write_json_str(self.out, field.name()))
                .and_then(|()| self.out.write_char(':'))
                .and_then(|()| value(self.out));
        }
    }
}

impl<W: fmt::Write> Visit for Fields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.pair(field, |w| write_json_str(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pair(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pair(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.pair(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's spelling: `2.0`, not `2`; `null` for NaN and infinities.
        let text = serde_json::to_string(&value).unwrap_or_else(|_| "null".into());
        self.pair(field, |w| w.write_str(&text));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.pair(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// Writes `s` as a JSON string, escaped as serde_json escapes it.
fn write_json_str(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(s)?;
    out.write_char('"')
}

/// Writes into a JSON string's body: `"` and `\` escaped, control
/// characters as `\n`-style or `\u00XX` escapes, the rest as it is.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::format::JsonFields;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn lines(&self) -> Vec<serde_json::Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        }
    }

    /// Every kind of field and span arrangement the runtime logs.
    fn events() {
        tracing::info!("plain message");
        tracing::warn!(
            text = "quote \" backslash \\ newline \n tab \t bell \u{7} del \u{7f} 漢字 é",
            yes = true,
            no = false,
            neg = -42i64,
            big = u64::MAX,
            half = 1.5f64,
            whole = 2.0f64,
            nan = f64::NAN,
            shown = %"display \"value\"",
            debugged = ?vec!["a", "b\n"],
            "with {} fields",
            "many"
        );
        let outer = tracing::info_span!("request", request_id = "r-1", method = %"POST", route = "/webhooks/\"x\"");
        let _o = outer.enter();
        tracing::error!(status = 500u16, latency_us = 12u64, "request failed");
        let inner = tracing::info_span!("inner");
        {
            let _i = inner.enter();
            tracing::info!(target: "custom::target", n = 1, "inside a span without fields");
        }
        let other = tracing::info_span!("other", k = 7);
        tracing::info!(parent: &other, "explicit parent");
        tracing::info!(parent: None, "no parent at all");
    }

    #[test]
    fn lines_match_the_stock_json_formatter() {
        let stock = Buf::default();
        let ours = Buf::default();
        let s = stock.clone();
        let stock_sub = tracing_subscriber::fmt()
            .with_writer(move || s.clone())
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish();
        tracing::subscriber::with_default(stock_sub, events);
        let o = ours.clone();
        let our_sub = tracing_subscriber::fmt()
            .with_writer(move || o.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLine)
            .finish();
        tracing::subscriber::with_default(our_sub, events);

        let (mut stock, mut ours) = (stock.lines(), ours.lines());
        assert_eq!(stock.len(), 6);
        assert_eq!(ours.len(), stock.len());
        for (s, o) in stock.iter_mut().zip(ours.iter_mut()) {
            let (ts, ts_stock) = (o["timestamp"].take(), s["timestamp"].take());
            let (ts, ts_stock) = (ts.as_str().unwrap(), ts_stock.as_str().unwrap());
            assert_eq!(ts.len(), ts_stock.len(), "{ts} vs {ts_stock}");
            assert!(
                crate::timefmt::parse_rfc3339_ms(ts).is_some() && ts[..10] == ts_stock[..10],
                "{ts} vs {ts_stock}"
            );
            assert_eq!(o, s);
        }
    }

    #[test]
    fn control_characters_are_escaped_as_serde_json_does() {
        let all: String = (0u8..0x80).map(char::from).collect();
        let mut ours = String::new();
        write_json_str(&mut ours, &all).unwrap();
        assert_eq!(ours, serde_json::to_string(&all).unwrap());
    }
}
