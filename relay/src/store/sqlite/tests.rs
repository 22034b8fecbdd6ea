//! The SQLite engine: the shared store contract, reopening, migrations, quotas.

use super::*;

#[test]
fn sqlite_store_meets_the_store_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open(dir.path(), false).expect("open");
    super::super::contract::check(&mut store);
}

#[test]
fn sqlite_store_meets_the_group_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open(dir.path(), false).expect("open");
    super::super::group_contract::check(&mut store);
    // Groups and KeyPackages are durable: reopened, the group is where it was.
    drop(store);
    let mut store = SqliteStore::open(dir.path(), false).expect("reopen");
    let stale = store
        .commit(
            &[WriteOp::Group(crate::store::group::GroupWrite {
                group_id: b"group-0123456789".to_vec(),
                sender: [1; 32],
                msg_id: [99; 16],
                epoch: 0,
                timestamp_ms: 1,
                message: bytes::Bytes::from_static(&[0x10]),
                commit: None,
            })],
            &Quotas::UNLIMITED,
        )
        .expect("commit");
    assert_eq!(
        stale,
        vec![WriteResult::Group(crate::store::group::GroupResult::Stale {
            epoch: 3
        })]
    );
}

#[test]
fn sqlite_store_meets_the_quota_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open(dir.path(), false).expect("open");
    super::super::contract::check_quotas(&mut store);
}

#[test]
fn quota_counts_are_read_again_after_reopening_and_after_a_failed_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quotas = Quotas {
        sender_messages: 2,
        ..Quotas::UNLIMITED
    };
    let message = |id: u8| {
        WriteOp::Append(NewMessage {
            recipient: [id; 32],
            sender: [1; 32],
            msg_id: [id; 16],
            timestamp_ms: 10,
            payload: vec![0; 50].into(),
        })
    };
    {
        let mut store = SqliteStore::open(dir.path(), false).expect("open");
        let r = store.commit(&[message(1), message(2)], &quotas).expect("commit");
        assert!(
            r.iter().all(|r| matches!(r, WriteResult::Appended { .. })),
            "{r:?}"
        );
    }
    let mut store = SqliteStore::open(dir.path(), false).expect("reopen");
    assert_eq!(
        store.commit(&[message(3)], &quotas).expect("commit"),
        vec![WriteResult::QuotaExceeded(super::super::Quota::SenderMessages)],
        "the sender's stored messages still count after a restart"
    );
    assert_eq!(store.stored_usage().expect("usage"), Usage::of(2, 100));
    // A batch that fails rolls back, and the counts it had changed are read again.
    store
        .conn
        .execute_batch("CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.msg_id = X'05050505050505050505050505050505' BEGIN SELECT RAISE(ABORT, 'refused'); END;")
        .expect("trigger");
    let ack = WriteOp::Ack {
        recipient: [1; 32],
        sender: [1; 32],
        msg_id: [1; 16],
    };
    assert!(store.commit(&[ack, message(5)], &quotas).is_err());
    assert_eq!(
        store.commit(&[message(6)], &quotas).expect("commit"),
        vec![WriteResult::QuotaExceeded(super::super::Quota::SenderMessages)],
        "the rolled-back acknowledgement freed nothing"
    );
}

#[test]
fn a_senders_usage_is_counted_through_the_index_of_its_unacknowledged_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), false).expect("open");
    let plan = plan(&store.conn, SENDER_USAGE_SQL, params![&[0u8; 32][..]]);
    assert!(
        plan.iter().any(|step| step.contains("messages_unacked_sender")),
        "{plan:?}"
    );
}

#[test]
fn queue_reads_use_the_index_of_unacknowledged_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), false).expect("open");
    let key = &[0u8; 32][..];
    let plans = [
        (QUEUE_LEN_SQL, plan(&store.conn, QUEUE_LEN_SQL, params![key])),
        (PENDING_SQL, plan(&store.conn, PENDING_SQL, params![key, 0, 0, 1])),
    ];
    for (sql, plan) in plans {
        assert!(
            plan.iter().any(|step| step.contains("messages_unacked")),
            "{sql}: {plan:?}"
        );
    }
}

/// The steps of SQLite's plan for `sql`.
fn plan(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Vec<String> {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("plan");
    stmt.query_map(params, |row| row.get::<_, String>(3))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn an_old_database_gets_the_new_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let old_schema = SCHEMA.replace(
            "DROP INDEX IF EXISTS messages_queue;\nCREATE INDEX IF NOT EXISTS messages_unacked ON messages (recipient, seq) WHERE acked = 0;",
            "CREATE INDEX messages_queue ON messages (recipient, acked, seq);",
        );
        assert_ne!(old_schema, SCHEMA, "the schema before the partial index");
        let conn = Connection::open(dir.path().join("relay.db")).expect("open");
        conn.execute_batch(&old_schema).expect("old schema");
        conn.execute(
            "INSERT INTO messages (recipient, sender, msg_id, ts, payload) VALUES (?1, ?2, ?3, 5, ?4)",
            params![&[1u8; 32][..], &[2u8; 32][..], &[3u8; 16][..], &b"kept"[..]],
        )
        .expect("a queued message");
    }
    let mut store = SqliteStore::open(dir.path(), false).expect("reopen");
    assert_eq!(store.queue_len(&[1; 32]).expect("len"), 1);
    let queued = store.pending(&[1; 32], 0, 10, 0).expect("pending");
    assert_eq!(queued.len(), 1);
    assert_eq!(&queued[0].payload[..], b"kept");
    let names: Vec<String> = store
        .conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'")
        .expect("prepare")
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert!(names.iter().any(|n| n == "messages_unacked"), "{names:?}");
    assert!(!names.iter().any(|n| n == "messages_queue"), "{names:?}");
}

#[test]
fn the_reverse_lookup_uses_the_index_on_claim_identities() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), false).expect("open");
    let plan = plan(&store.conn, CLAIM_OF_SQL, params![&[0u8; 32][..]]);
    assert!(
        plan.iter().any(|step| step.contains("claims_identity")),
        "{plan:?}"
    );
    assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "{plan:?}");
}

#[test]
fn an_old_database_gets_claim_leases_counted_from_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice, claim) = crate::store::contract::claim(1, "alice", 5);
    let (bob, bob_claim) = crate::store::contract::claim(2, "alice", 6);
    {
        let old_schema = SCHEMA
            .replace(
                "    claim        BLOB NOT NULL,\n    stored_ms    INTEGER NOT NULL DEFAULT 0,\n    last_auth_ms INTEGER\n",
                "    claim        BLOB NOT NULL\n",
            )
            .replace("CREATE INDEX IF NOT EXISTS claims_identity ON claims (identity);\n", "");
        assert_ne!(old_schema, SCHEMA, "the schema before name leases");
        let conn = Connection::open(dir.path().join("relay.db")).expect("open");
        conn.execute_batch(&old_schema).expect("old schema");
        conn.execute(
            "INSERT INTO claims (name, identity, claim) VALUES ('alice', ?1, ?2)",
            params![&alice[..], &claim],
        )
        .expect("a claim");
    }
    let before = crate::now_ms();
    let mut store = SqliteStore::open(dir.path(), false).expect("reopen");
    let stored_ms: i64 = store
        .conn
        .query_row("SELECT stored_ms FROM claims WHERE name = 'alice'", [], |row| {
            row.get(0)
        })
        .expect("stored_ms");
    assert!(ms_of(stored_ms) >= before, "counted from the upgrade");
    assert_eq!(store.claim_of(&alice).expect("reverse"), Some(claim.clone()));
    let lease = Lease::from_secs(3600);
    let now = crate::now_ms();
    assert_eq!(
        store
            .put_claim("alice", &bob, &bob_claim, now, lease)
            .expect("put"),
        ClaimOutcome::HeldByAnother,
        "the lease runs from the upgrade, not from 1970"
    );
    assert_eq!(
        store
            .put_claim("alice", &bob, &bob_claim, now + 3_600_001, lease)
            .expect("put"),
        ClaimOutcome::TakenOver { from: alice }
    );
    // Opening again changes nothing.
    drop(store);
    let mut store = SqliteStore::open(dir.path(), false).expect("reopen");
    assert_eq!(store.get_claim("alice").expect("get"), Some(bob_claim));
}

#[test]
fn a_names_holder_and_last_authentication_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice, claim) = crate::store::contract::claim(1, "alice", 5);
    let (bob, bob_claim) = crate::store::contract::claim(2, "alice", 6);
    let lease = Lease::from_secs(10);
    {
        let mut store = SqliteStore::open(dir.path(), true).expect("open");
        let stored = store
            .put_claim("alice", &alice, &claim, 1_000, lease)
            .expect("put");
        assert_eq!(stored, ClaimOutcome::Stored);
        store.record_auth(&alice, 8_000).expect("auth");
    }
    let mut store = SqliteStore::open(dir.path(), true).expect("reopen");
    assert_eq!(store.claim_of(&alice).expect("reverse"), Some(claim));
    assert_eq!(
        store
            .put_claim("alice", &bob, &bob_claim, 15_000, lease)
            .expect("put"),
        ClaimOutcome::HeldByAnother,
        "the login at 8 s still counts"
    );
    assert_eq!(
        store
            .put_claim("alice", &bob, &bob_claim, 18_001, lease)
            .expect("put"),
        ClaimOutcome::TakenOver { from: alice }
    );
}

#[test]
fn an_old_database_counts_its_known_identities_as_seen_at_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice, claim) = crate::store::contract::claim(1, "alice", 5);
    let (bob, stranger) = ([2u8; 32], [3u8; 32]);
    {
        let start = SCHEMA
            .find("CREATE TABLE IF NOT EXISTS last_seen")
            .expect("the last_seen table");
        let old_schema = &SCHEMA[..start];
        let conn = Connection::open(dir.path().join("relay.db")).expect("open");
        conn.execute_batch(old_schema).expect("old schema");
        conn.execute(
            "INSERT INTO claims (name, identity, claim) VALUES ('alice', ?1, ?2)",
            params![&alice[..], &claim],
        )
        .expect("a claim");
        conn.execute(
            "INSERT INTO bundles (identity, spk, sig) VALUES (?1, ?2, ?3)",
            params![&bob[..], &[7u8; 32][..], &[8u8; 64][..]],
        )
        .expect("a bundle");
    }
    let before = crate::now_ms();
    let mut store = SqliteStore::open(dir.path(), false).expect("reopen");
    for known in [alice, bob] {
        let seen = store.last_seen(&known).expect("seen").expect("counted as seen");
        assert!(seen >= before, "seen at the upgrade");
    }
    assert_eq!(store.last_seen(&stranger).expect("seen"), None);
    // Opening again seeds nothing more.
    let seen = WriteOp::Seen {
        identity: stranger,
        at_ms: 5,
        precision_ms: 0,
    };
    store.commit(&[seen], &Quotas::UNLIMITED).expect("seen");
    drop(store);
    let mut store = SqliteStore::open(dir.path(), false).expect("reopen");
    assert_eq!(store.last_seen(&stranger).expect("seen"), Some(5));
}

#[test]
fn last_seen_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut store = SqliteStore::open(dir.path(), true).expect("open");
        let seen = WriteOp::Seen {
            identity: [4; 32],
            at_ms: 9_000,
            precision_ms: 0,
        };
        store.commit(&[seen], &Quotas::UNLIMITED).expect("seen");
    }
    let mut store = SqliteStore::open(dir.path(), true).expect("reopen");
    assert_eq!(store.last_seen(&[4; 32]).expect("seen"), Some(9_000));
}

#[test]
fn committed_messages_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut store = SqliteStore::open(dir.path(), true).expect("open");
        let op = WriteOp::Append(NewMessage {
            recipient: [1; 32],
            sender: [2; 32],
            msg_id: [3; 16],
            timestamp_ms: 10,
            payload: b"ciphertext".to_vec().into(),
        });
        store.commit(&[op], &Quotas::UNLIMITED).expect("commit");
    }
    let mut store = SqliteStore::open(dir.path(), true).expect("reopen");
    let pending = store.pending(&[1; 32], 0, 10, 0).expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].payload, &b"ciphertext"[..]);
}

#[test]
fn a_new_database_and_its_wal_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open(dir.path(), true).expect("open");
    let op = WriteOp::Append(NewMessage {
        recipient: [1; 32],
        sender: [2; 32],
        msg_id: [3; 16],
        timestamp_ms: 10,
        payload: b"ciphertext".to_vec().into(),
    });
    store.commit(&[op], &Quotas::UNLIMITED).expect("commit");
    for name in ["relay.db", "relay.db-wal", "relay.db-shm"] {
        let meta = std::fs::metadata(dir.path().join(name)).expect(name);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
    }
}

#[test]
fn an_error_opening_the_database_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    std::fs::write(&path, vec![0x5a; 8192]).expect("not a database");
    let err = SqliteStore::open(dir.path(), true).err().expect("refused");
    assert!(
        matches!(&err, StoreError::Open { path: p, .. } if *p == path),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("cannot open the store {}: file is not a database", path.display())
    );
}

#[test]
fn a_store_error_names_the_file() {
    let path = Path::new("/data/relay.db");
    let err = StoreError::Corrupt("negative seq").in_file(Some(path));
    assert_eq!(
        err.to_string(),
        "store /data/relay.db: corrupt store: negative seq"
    );
    let again = err.in_file(Some(path));
    assert_eq!(
        again.to_string(),
        "store /data/relay.db: corrupt store: negative seq",
        "named once"
    );
    assert_eq!(
        StoreError::Unavailable.in_file(None).to_string(),
        "store unavailable"
    );
}
