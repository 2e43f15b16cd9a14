//! Freshness and deadlines, on both metadata backends: a stale asset and a late run are each
//! mailed once (to a real SMTP server), shown in `/metrics` figures' source, and the run goes
//! on untouched.

use std::sync::Arc;
use std::time::Duration;

use weir_model::RunState;
use weir_model::clock::Clock;
use weir_notify::{Dispatcher, MessageTemplate, Notifier, NotifyConfig, Smtp, SmtpTls};
use weir_scheduler::Scheduler;
use weir_testkit::engine::{Engine, scheduler_config};
use weir_testkit::per_backend;
use weir_testkit::smtp::SmtpSink;

const PRODUCER: &str = r#"id: producer
on_failure: [mail]
assets:
  wh.public.orders: {freshness: 2h, description: "Orders, loaded hourly"}
tasks:
  load:
    kind: shell
    run: "true"
    produces: [wh.public.orders]
"#;

const SLOW: &str = r#"id: slow
deadline: {reference: queued_at, within: 30m, notify: [mail]}
tasks:
  wait:
    kind: shell
    run: "true"
"#;

fn notify(smtp: &SmtpSink) -> NotifyConfig {
    NotifyConfig {
        notifiers: [(
            "mail".to_owned(),
            Notifier::Email {
                to: vec!["ops@example.org".into()],
                message: MessageTemplate::default(),
            },
        )]
        .into_iter()
        .collect(),
        smtp: Some(Smtp {
            host: "127.0.0.1".into(),
            port: smtp.port,
            tls: SmtpTls::None,
            from: "weir@example.org".into(),
            username: None,
            password: None,
            ca_file: None,
        }),
        base_url: "http://weir.test".into(),
    }
}

/// A scheduler pass at `engine`'s clock + `later`, then the outbox drained.
async fn pass(
    engine: &Engine,
    scheduler: &mut Scheduler,
    dispatcher: &Dispatcher,
    later: chrono::Duration,
) {
    engine.clock.advance(later);
    scheduler.run_once().await.expect("pass");
    dispatcher.drain().await.expect("drain");
}

fn subjects(smtp: &SmtpSink) -> Vec<String> {
    smtp.received()
        .iter()
        .filter_map(|m| {
            m.text()
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
        })
        .collect()
}

per_backend!(a_stale_asset_and_a_late_run_are_told_once, |db: TestDb| {
    let smtp = SmtpSink::start(false).await;
    let mut engine = Engine::new(&db, &[("producer.yaml", PRODUCER), ("slow.yaml", SLOW)]).await;
    let mut cfg = scheduler_config(engine.dir.path());
    cfg.notify = notify(&smtp);
    let clock = Arc::clone(&engine.clock) as Arc<dyn Clock>;
    let mut scheduler = Scheduler::new(engine.store.clone(), cfg.clone(), Arc::clone(&clock));
    let dispatcher = Dispatcher::new(engine.store.clone(), clock, cfg.notify.clone());

    // The asset is updated, then stays fresh for 2 hours.
    let run = engine.trigger("producer", serde_json::json!({})).await;
    assert_eq!(engine.drive(&run.run_id).await.state, RunState::Success);
    let updated = engine.clock.now();
    pass(
        &engine,
        &mut scheduler,
        &dispatcher,
        chrono::Duration::minutes(119),
    )
    .await;
    assert!(subjects(&smtp).is_empty(), "{:?}", subjects(&smtp));
    // Past 2 hours: one mail, however many checks follow.
    pass(
        &engine,
        &mut scheduler,
        &dispatcher,
        chrono::Duration::minutes(2),
    )
    .await;
    for _ in 0..3 {
        pass(
            &engine,
            &mut scheduler,
            &dispatcher,
            chrono::Duration::minutes(5),
        )
        .await;
    }
    let mails = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        subjects(&smtp),
        ["weir: asset wh.public.orders is stale (declared by producer)"]
    );
    let text = mails[0].text();
    let since =
        (updated + chrono::Duration::hours(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(text.contains(&format!("Late since: {since}")), "{text}");
    assert!(text.contains("Asset: wh.public.orders"), "{text}");
    assert!(
        text.contains("http://weir.test/assets/wh.public.orders"),
        "{text}"
    );
    let fresh = engine.store.freshness().await.expect("freshness");
    assert_eq!(fresh[0].asset_key, "wh.public.orders");
    assert!(fresh[0].stale_since.is_some());

    // Updated again: fresh; stale again later: a second mail (a new late spell).
    let run = engine.trigger("producer", serde_json::json!({})).await;
    engine.drive(&run.run_id).await;
    pass(
        &engine,
        &mut scheduler,
        &dispatcher,
        chrono::Duration::seconds(11),
    )
    .await;
    assert!(
        engine.store.freshness().await.expect("freshness")[0]
            .stale_since
            .is_none()
    );
    pass(
        &engine,
        &mut scheduler,
        &dispatcher,
        chrono::Duration::hours(3),
    )
    .await;
    pass(
        &engine,
        &mut scheduler,
        &dispatcher,
        chrono::Duration::minutes(1),
    )
    .await;
    smtp.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(subjects(&smtp).len(), 2, "{:?}", subjects(&smtp));

    // A run queued and not finished 30 minutes later: one mail; the run is untouched.
    let slow = engine.trigger("slow", serde_json::json!({})).await;
    pass(
        &engine,
        &mut scheduler,
        &dispatcher,
        chrono::Duration::minutes(29),
    )
    .await;
    assert_eq!(subjects(&smtp).len(), 2);
    pass(
        &engine,
        &mut scheduler,
        &dispatcher,
        chrono::Duration::minutes(2),
    )
    .await;
    pass(
        &engine,
        &mut scheduler,
        &dispatcher,
        chrono::Duration::minutes(2),
    )
    .await;
    smtp.wait_for(3, Duration::from_secs(10)).await;
    let all = subjects(&smtp);
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(
        all[2].starts_with("weir: slow missed its deadline"),
        "{all:?}"
    );
    let run = engine.store.run(&slow.run_id).await.expect("run");
    assert!(run.deadline_missed_at.is_some());
    assert!(!run.state.is_finished(), "the run goes on: {:?}", run.state);
    assert_eq!(engine.drive(&slow.run_id).await.state, RunState::Success);
    assert_eq!(
        engine.store.deadline_misses().await.expect("misses"),
        [("slow".to_owned(), 1)]
    );
});
