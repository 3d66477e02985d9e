//! Versioned migrations on every store: an old schema with data is brought up to date without loss; instances
//! starting together apply each migration once; a database migrated by a newer binary is refused.

use stockroom_domain::{Change, ChangeOp, HoldLine, HoldRequest, Location, Quantity, ReservationId, Sku, Ttl};
use stockroom_e2e::{Backend, TestDb, settings_for};
use stockroom_store::{
    Command, CommandInbox, Effect, Idempotency, Inspect, Ledger, MIGRATIONS, MovementFilter, Outcome, QueuedCommand,
    SqlStore, StoreError, StoreSettings,
};

on_every_store!(
    an_upgrade_from_the_first_schema_keeps_every_row_and_gains_the_rest,
    instances_starting_together_apply_each_migration_once,
    a_database_migrated_by_a_newer_binary_is_refused,
);

fn settings(db: &TestDb) -> StoreSettings {
    settings_for(&db.url).store()
}

fn names() -> Vec<&'static str> {
    MIGRATIONS.iter().map(|(name, _)| *name).collect()
}

fn sku(s: &str) -> Sku {
    Sku::parse(s).expect("a sku")
}

fn location(s: &str) -> Location {
    Location::parse(s).expect("a location")
}

async fn an_upgrade_from_the_first_schema_keeps_every_row_and_gains_the_rest(b: Backend) {
    let db = TestDb::new(b).await;
    let mut first = settings(&db);
    first.schema_target = Some("0001_ledger".into());
    let old = SqlStore::connect(&first).await.expect("a store on the first schema");
    assert_eq!(old.migrated_now(), ["0001_ledger"]);

    // Data through the ledger's own port: a location, stock under an idempotency key, a hold and its sale.
    old.put_location(location("wh"), "Warehouse".into(), 1).await.expect("location");
    let receipt = Command::Adjust {
        changes: vec![Change {
            sku: sku("OLD"),
            location: location("wh"),
            op: ChangeOp::Delta(10),
            reason: "received".into(),
            reference: None,
            expected_on_hand: None,
        }],
        cause: "adjustment:before-upgrade".into(),
    };
    let key = Idempotency { key: "before-upgrade".into(), request_hash: "h".into() };
    assert!(matches!(old.execute(receipt.clone(), Some(key.clone()), None).await, Ok(Outcome::Done(_))));
    let id = ReservationId::parse("cart-old").expect("an id");
    let request = HoldRequest {
        lines: vec![HoldLine { sku: sku("OLD"), quantity: Quantity::new(3).expect("3"), location: None }],
        ttl: Ttl::default(),
        reference: None,
    };
    assert!(matches!(old.execute(Command::Hold { id: id.clone(), request }, None, None).await, Ok(Outcome::Done(_))));
    let sold = old.execute(Command::Commit { id: id.clone(), lines: None }, None, None).await;
    assert!(matches!(sold, Ok(Outcome::Done(_))), "{sold:?}");
    let filter = MovementFilter { limit: 1000, ..MovementFilter::default() };
    let movements = old.movements(&filter).await.expect("movements");
    let stock = old.stock(&[sku("OLD")]).await.expect("stock");
    let reservation = old.reservation(&id).await.expect("reservation");
    let inspect = Inspect::open(&first).await.expect("inspect");
    assert!(inspect.rows("SELECT COUNT(*) FROM command_inbox").await.is_err(), "the first schema has no inbox yet");
    drop(old);

    // The current binary's start migrates the rest.
    let new = SqlStore::connect(&settings(&db)).await.expect("the upgraded store");
    assert_eq!(new.migrated_now(), &names()[1..], "every later migration, once, in order");

    // Every row is still there and means the same.
    assert_eq!(new.movements(&filter).await.expect("movements"), movements);
    assert_eq!(new.stock(&[sku("OLD")]).await.expect("stock"), stock);
    assert_eq!(new.reservation(&id).await.expect("reservation"), reservation);
    assert_eq!(stock[0].total.committed, 3, "{stock:?}");
    assert_eq!(stock[0].total.available, 7, "{stock:?}");
    // The idempotency record from before answers the same key with its stored answer.
    match new.execute(receipt, Some(key), None).await {
        Ok(Outcome::Replayed(answer)) => assert_eq!(answer.status, 200, "{answer:?}"),
        other => panic!("the first answer again, not {other:?}"),
    }
    // And what came with the later migrations works.
    let queued = QueuedCommand {
        id: "after-upgrade".into(),
        ty: "dev.stockroom.command.release.v1".into(),
        source: "//test".into(),
        ordering_key: "cart-old".into(),
        data: serde_json::json!({ "reservation_id": "cart-old" }),
        attempts: 0,
    };
    new.enqueue(vec![queued]).await.expect("enqueue");
    assert_eq!(new.due_commands(10).await.expect("due").len(), 1);
    let released = new.execute(Command::Release { id }, None, None).await;
    assert!(matches!(released, Ok(Outcome::Done(Effect::Reservation { .. }))), "{released:?}");
}

async fn instances_starting_together_apply_each_migration_once(b: Backend) {
    let db = TestDb::new(b).await;
    let settings = settings(&db);
    let starts = futures::future::join_all((0..4).map(|_| SqlStore::connect(&settings))).await;

    let mut applied: Vec<&str> = Vec::new();
    for start in &starts {
        let store = start.as_ref().unwrap_or_else(|e| panic!("every start succeeds: {e:?}"));
        applied.extend(store.migrated_now());
    }
    applied.sort_unstable();
    assert_eq!(applied, names(), "each migration applied by exactly one of the four starts");
    let versions = stockroom_e2e::rows(&db.url, "SELECT version FROM schema_migrations ORDER BY version").await;
    let versions: Vec<String> = versions.iter().map(|r| r.text(0).expect("a version")).collect();
    assert_eq!(versions, names());
    let lease = stockroom_e2e::count_rows(&db.url, "SELECT COUNT(*) FROM schema_lock").await;
    assert_eq!(lease, 0, "the migration lease was let go");
}

async fn a_database_migrated_by_a_newer_binary_is_refused(b: Backend) {
    let db = TestDb::new(b).await;
    drop(SqlStore::connect(&settings(&db)).await.expect("a current store"));
    let newer = "INSERT INTO schema_migrations (version, applied_at) VALUES ('9999_from_a_newer_binary', 0)";
    assert_eq!(stockroom_e2e::execute(&db.url, newer).await, 1);

    let refused = SqlStore::connect(&settings(&db)).await.err();

    match refused {
        Some(StoreError::Config(why)) => {
            assert!(why.contains("9999_from_a_newer_binary") && why.contains("newer"), "{why}");
        }
        other => panic!("a configuration error, not {:?}", other.map(|e| e.to_string())),
    }
}
