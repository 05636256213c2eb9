//! The conversation log store on SQLite, PostgreSQL and MariaDB: every test
//! runs on all three, each in a database of its own.

mod logdb;

use std::collections::HashSet;
use std::time::Duration;

use bot_runtime::convlog::export::{Format, export};
use bot_runtime::convlog::{Page, retention};
use bot_runtime::support::timefmt::now_ms;
use logdb::*;

#[tokio::test]
async fn the_same_batch_twice_stores_each_exchange_once() {
    for engine in ENGINES {
        let db = TestDb::create(engine).await;
        let store = db.store().await;
        // Migrations are idempotent: a second start changes nothing.
        store.migrate().await.unwrap();
        let t = now_ms();
        let batch: Vec<_> = (0..120)
            .map(|i| {
                exchange(
                    if i % 2 == 0 { "s-even" } else { "s-odd" },
                    Some("u1"),
                    t + i,
                )
            })
            .collect();
        store.insert_batch(&batch).await.unwrap();
        store.insert_batch(&batch).await.unwrap();
        store.insert_batch(&batch[10..20]).await.unwrap();
        let ids = all_ids(&store).await;
        assert_eq!(ids.len(), 120, "{engine:?}: no duplicates");
        let want: HashSet<_> = batch.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids.into_iter().collect::<HashSet<_>>(), want, "{engine:?}");

        let even = store.session_exchanges("s-even").await.unwrap();
        assert_eq!(even.len(), 60, "{engine:?}");
        assert!(even.windows(2).all(|w| w[0].created_at <= w[1].created_at));
        assert_eq!(
            even[0],
            Exchange {
                owner: None,
                ..batch[0].clone()
            },
            "{engine:?}: round trip"
        );
        assert_eq!(
            store.session_owner("s-even").await.unwrap(),
            Some(Some("key-1".into()))
        );
        assert_eq!(store.session_owner("nope").await.unwrap(), None);
        store.ping().await.unwrap();
    }
}

use bot_runtime::convlog::Exchange;

#[tokio::test]
async fn keyset_pages_cover_every_row_once_in_time_order_with_filters() {
    for engine in ENGINES {
        let db = TestDb::create(engine).await;
        let store = db.store().await;
        let base = 1_700_000_000_000;
        // Equal timestamps on purpose: the id breaks ties.
        let rows: Vec<_> = (0..53)
            .map(|i| {
                exchange(
                    &format!("s{}", i % 4),
                    Some(["a", "b", "c"][i % 3]),
                    base + (i as i64 / 3),
                )
            })
            .collect();
        store.insert_batch(&rows).await.unwrap();
        let mut want: Vec<_> = rows.iter().map(|e| (e.created_at, e.id.clone())).collect();
        want.sort();

        let mut got = Vec::new();
        let mut page = Page {
            limit: 7,
            ..Page::default()
        };
        loop {
            let p = store.page(&page).await.unwrap();
            assert!(p.len() <= 7);
            got.extend(p.iter().map(|e| (e.created_at, e.id.clone())));
            match p.last() {
                Some(l) if p.len() == 7 => page.after = Some((l.created_at, l.id.clone())),
                _ => break,
            }
        }
        assert_eq!(got, want, "{engine:?}");

        let only_b = store
            .page(&Page {
                user_id: Some("b".into()),
                limit: 500,
                ..Page::default()
            })
            .await
            .unwrap();
        assert_eq!(
            only_b.len(),
            rows.iter()
                .filter(|e| e.user_id.as_deref() == Some("b"))
                .count()
        );
        assert!(only_b.iter().all(|e| e.user_id.as_deref() == Some("b")));

        let window = store
            .page(&Page {
                since: Some(base + 5),
                until: Some(base + 10),
                limit: 500,
                ..Page::default()
            })
            .await
            .unwrap();
        assert_eq!(
            window.len(),
            15,
            "{engine:?}: [since, until) holds 5 ms of 3 rows"
        );
        assert!(
            window
                .iter()
                .all(|e| (base + 5..base + 10).contains(&e.created_at))
        );
    }
}

#[tokio::test]
async fn export_writes_the_range_in_time_order_as_jsonl_and_csv() {
    for engine in ENGINES {
        let db = TestDb::create(engine).await;
        let store = db.store().await;
        let base = 1_800_000_000_000;
        // Inserted newest first; more than one export page.
        let rows: Vec<_> = (0..1203)
            .rev()
            .map(|i| exchange("s", Some("u"), base + i))
            .collect();
        store.insert_batch(&rows).await.unwrap();

        let mut out = Vec::new();
        let off = bot_runtime::crypto::Keyring::off();
        let n = export(&store, &off, base + 3, base + 1203, Format::Jsonl, &mut out)
            .await
            .unwrap();
        assert_eq!((n.rows, n.unreadable_fields), (1200, 0), "{engine:?}");
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1200);
        let times: Vec<_> = lines
            .iter()
            .map(|v| v["created_at"].as_str().unwrap().to_owned())
            .collect();
        let mut sorted = times.clone();
        sorted.sort();
        assert_eq!(times, sorted, "{engine:?}: time order");
        assert_eq!(
            lines[0]["user_input"],
            rows.iter()
                .find(|e| e.created_at == base + 3)
                .unwrap()
                .user_input
        );

        let mut csv = Vec::new();
        let n = export(&store, &off, base, base + 2, Format::Csv, &mut csv)
            .await
            .unwrap();
        assert_eq!(n.rows, 2);
        let csv = String::from_utf8(csv).unwrap();
        assert!(
            csv.starts_with("id,session_id,user_id,channel,user_input,"),
            "{csv}"
        );
        // The newline inside user_input is quoted, so 1 header + 2 rows take 5 lines.
        assert_eq!(csv.lines().count(), 5, "{csv}");
        assert!(
            csv.contains("\"question, with \"\"quotes\"\"\nand a newline"),
            "{csv}"
        );
    }
}

#[tokio::test]
async fn retention_deletes_only_old_rows_in_small_batches() {
    for engine in ENGINES {
        let db = TestDb::create(engine).await;
        let store = db.store().await;
        let old = now_ms() - 3 * 86_400_000;
        let old_rows: Vec<_> = (0..2500)
            .map(|i| exchange(&format!("old{}", i % 10), None, old + i))
            .collect();
        for chunk in old_rows.chunks(1000) {
            store.insert_batch(chunk).await.unwrap();
        }
        let fresh: Vec<_> = (0..10)
            .map(|i| exchange("fresh", None, now_ms() + i))
            .collect();
        store.insert_batch(&fresh).await.unwrap();

        let deleted = retention::prune(&store, 2, Duration::ZERO).await;
        assert_eq!(
            deleted,
            2500 + 10,
            "{engine:?}: 2500 logs and 10 idle sessions"
        );
        let left: HashSet<_> = all_ids(&store).await.into_iter().collect();
        assert_eq!(
            left,
            fresh.iter().map(|e| e.id.clone()).collect::<HashSet<_>>(),
            "{engine:?}"
        );
        assert_eq!(store.session_owner("old1").await.unwrap(), None);
        assert!(store.session_owner("fresh").await.unwrap().is_some());
        assert_eq!(retention::prune(&store, 2, Duration::ZERO).await, 0);
    }
}
