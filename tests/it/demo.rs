//! `fulfilld demo --exit`, as a new user runs it: the shop day plays out on its own store and
//! ports, and its summary says what happened to each order.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_plays_a_shop_day_and_says_what_happened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
            .args(["demo", "--exit"])
            .current_dir(dir.path())
            .env("FULFILLD__HTTP__ADDR", "127.0.0.1:0")
            .env("FULFILLD__SANDBOX__ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the demo ends")
    .expect("fulfilld demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The summary's rows, as columns (a table's columns are two or more spaces apart).
    let row = |scenario: &str, provider: &str| -> Vec<String> {
        text.lines()
            .filter(|l| {
                let cols: Vec<&str> = l
                    .split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect();
                cols.first() == Some(&scenario) && cols.get(1) == Some(&provider)
            })
            .map(str::to_owned)
            .collect()
    };
    for (scenario, provider, status) in [
        ("happy path", "razorpay", "fulfilled"),
        ("happy path", "paypal", "fulfilled"),
        ("duplicate webhook", "stripe", "fulfilled"),
        ("late webhook", "stripe", "fulfilled"),
        ("failed payment", "paypal", "payment_failed"),
        ("refund", "stripe", "refunded"),
    ] {
        let rows = row(scenario, provider);
        assert_eq!(rows.len(), 1, "{scenario} {provider} in\n{text}");
        assert!(rows[0].contains(status), "{}", rows[0]);
    }
    assert!(
        row("duplicate webhook", "stripe")[0].contains("2 deliveries, capture confirmed 1 time(s)")
    );
    assert!(
        row("failed payment", "paypal")[0].contains("its 3 mugs released: 47 available"),
        "{text}"
    );
    assert!(
        row("refund", "stripe")[0].contains("access revoked"),
        "{text}"
    );
    let race = row("last seat race", "stripe");
    assert_eq!(race.len(), 2, "{text}");
    assert!(
        race[0].contains("fulfilled")
            && race[1].contains("2 others")
            && race[1].contains("out_of_stock")
    );
    assert!(text.contains("/admin   admin token: "), "{text}");
    // Nothing was written where it ran: the demo keeps to a directory of its own.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}
