//! The tamper corpus (issue 20, Must show 1): a chain built by driving the broker (requests,
//! approvals, grants, revocations) and covered by signed checkpoints, then at least 1,000
//! random mutations per engine, each applied to the database and held by the verification
//! `jit-server audit verify --checkpoints` runs (`checkpoint::verify::against` over the sink's
//! checkpoints), then undone. Every mutation must be seen: one before the newest checkpoint is
//! reported as tampered, naming the first bad seq or the checkpoint that disproves the
//! database; a correctly hashed append after it, or a forged pending event, as not yet covered.
//!
//! Seeded and reproducible: `JIT_TAMPER_SEED=<seed>` repeats a run (every failure prints its
//! seed and mutation), `JIT_TAMPER_MUTATIONS=<n>` sets how many (default 1,000 per engine).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use jit_api::VerifyReport;
use jit_server::checkpoint::sink::{Sink, SinkSpec};
use jit_server::checkpoint::writer::Outcome;
use jit_server::checkpoint::{Checkpoint, PublicKey, verify};
use jit_server::store::audit::{self, Canonical, Event, GENESIS};
use jit_server::store::{Backend, Store, db};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::checkpoints::{activity, broker, key_files};
use crate::support::db::loosen_audit_table;
use crate::support::server::{Engine, run, server_bin};

/// Checkpoints signed while the chain is built (the newest covers every row).
const CHECKPOINTS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tamper_corpus_sqlite() {
    corpus(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tamper_corpus_postgres() {
    corpus(Engine::Postgres).await;
}

/// What the verifier must say about a mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Tampered: the walk's first bad seq (if the walk sees it) and the checkpoint that
    /// disproves the database (if one covers the damage).
    Bad {
        first_bad: Option<i64>,
        disproved_by: Option<u64>,
    },
    /// Tampered: a row outside the chain's seqs, named by its seq.
    Stray(&'static str),
    /// Not tampered as far as anyone can prove: this many chained events after the newest
    /// checkpoint.
    NotCovered(u64),
    /// Not tampered as far as anyone can prove: this many events not chained yet.
    Pending(u64),
}

/// One mutation: what it is, the SQL that does it, what the verifier must say.
struct Mutation {
    class: &'static str,
    what: String,
    sql: String,
    /// PostgreSQL: let a broker chain the forged pending events before verifying.
    seal: bool,
    expect: Expect,
}

/// The pristine chain the mutations start from.
struct Chain {
    backend: Backend,
    rows: Vec<Event>,
    cps: Vec<Checkpoint>,
}

impl Chain {
    fn head(&self) -> i64 {
        self.rows.last().map_or(0, |r| r.seq)
    }

    fn row(&self, seq: i64) -> &Event {
        &self.rows[usize::try_from(seq - 1).unwrap()]
    }

    /// The oldest checkpoint that covers row `seq`: the one that disproves a change there.
    fn covering(&self, seq: i64) -> Option<u64> {
        self.cps.iter().find(|c| c.seq >= seq).map(|c| c.number)
    }

    fn tampered_at(&self, first_bad: Option<i64>, from: i64) -> Expect {
        Expect::Bad {
            first_bad,
            disproved_by: self.covering(from),
        }
    }
}

async fn corpus(engine: Engine) {
    let seed = std::env::var("JIT_TAMPER_SEED").map_or_else(
        |_| rand::random::<u64>(),
        |s| s.parse().expect("JIT_TAMPER_SEED is a number"),
    );
    let count: usize = std::env::var("JIT_TAMPER_MUTATIONS").map_or(1_000, |s| {
        s.parse().expect("JIT_TAMPER_MUTATIONS is a number")
    });
    eprintln!("tamper corpus on {engine:?}: seed {seed} (JIT_TAMPER_SEED={seed} repeats it)");
    let Built {
        _dir,
        _broker,
        url,
        store,
        chain,
        keys,
        public,
        sink_url,
        restore,
    } = build(engine).await;

    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen_by_cli = std::collections::HashSet::new();
    let mut classes = std::collections::BTreeMap::<&str, usize>::new();
    for n in 0..count {
        let m = mutation(&chain, &mut rng);
        let context = format!(
            "{engine:?}, seed {seed}, mutation {n} ({}: {}):\n{}",
            m.class, m.what, m.sql
        );
        db::batch(&store, &m.sql)
            .await
            .unwrap_or_else(|e| panic!("{context}\ncannot apply: {e}"));
        if m.seal {
            // Another broker starts and chains what is pending.
            let other = Store::connect(&url, 1).await.unwrap();
            audit::caught_up(&other).await.unwrap();
            other.close().await;
        }
        let report = verify::against(&store, &chain.cps, &keys)
            .await
            .unwrap_or_else(|e| panic!("{context}\nverify failed: {e}"));
        check(&m.expect, &report, &chain, &context);
        // The command line, once per class: the same verdict, as an exit code.
        if seen_by_cli.insert(m.class) {
            command_line(&url, &sink_url, &public, &m.expect, &context);
        }
        *classes.entry(m.class).or_default() += 1;
        db::batch(&store, restore).await.unwrap();
        if n % 100 == 99 {
            let report = verify::against(&store, &chain.cps, &keys).await.unwrap();
            assert!(is_clean(&report), "{context}\nnot restored: {report:?}");
        }
    }
    eprintln!(
        "tamper corpus on {engine:?}: {count} mutations over {} rows and {} checkpoints, all seen: {classes:?}",
        chain.head(),
        chain.cps.len()
    );
    let expected: &[&str] = match chain.backend {
        Backend::Sqlite => &ALL_CLASSES[..ALL_CLASSES.len() - 1],
        Backend::Postgres => &ALL_CLASSES,
    };
    if count >= 1_000 {
        for class in expected {
            assert!(
                classes.contains_key(class),
                "seed {seed}: no `{class}` mutation"
            );
        }
    }
}

/// A chain and its checkpoints, built by the broker, and a database its owner loosened.
struct Built {
    _dir: tempfile::TempDir,
    /// Holds the database.
    _broker: crate::support::server::TestBroker,
    url: String,
    /// The corpus's own connection (the broker's is closed).
    store: Store,
    chain: Chain,
    keys: [PublicKey; 1],
    public: PathBuf,
    sink_url: String,
    /// SQL that puts the pristine chain back.
    restore: &'static str,
}

/// Each round files, approves, grants and revokes a request, then the broker signs a
/// checkpoint; then the broker stops and the owner takes the constraints off.
async fn build(engine: Engine) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let sink_dir = dir.path().join("sink");
    let (key, public, public_key) = key_files(dir.path(), "cp");
    let b = broker(engine, &key, &sink_dir).await;
    for _ in 0..CHECKPOINTS {
        activity(&b, 1).await;
        let outcome = b
            .app
            .checkpoints
            .as_ref()
            .unwrap()
            .tick(&b.app)
            .await
            .unwrap();
        assert!(matches!(outcome, Outcome::Written(_)), "{outcome:?}");
    }
    let url = b.app.config.database.url.clone();
    // The broker stops writing (and, on PostgreSQL, chaining): the corpus owns the database.
    b.app.store.close().await;
    let store = Store::connect(&url, 4).await.unwrap();
    let cps = Sink::open(&SinkSpec::File(sink_dir.clone()), None, 1)
        .await
        .unwrap()
        .list()
        .await
        .unwrap();
    let mut rows = Vec::new();
    audit::for_each(&store, 1, |e| {
        rows.push(e);
        Ok(())
    })
    .await
    .unwrap();
    let chain = Chain {
        backend: store.backend(),
        rows,
        cps,
    };
    assert_eq!(chain.cps.len(), CHECKPOINTS);
    assert_eq!(
        chain.cps.last().unwrap().seq,
        chain.head(),
        "the newest checkpoint covers the whole chain"
    );
    let keys = [public_key];
    let clean = verify::against(&store, &chain.cps, &keys).await.unwrap();
    assert!(is_clean(&clean), "{engine:?}: the built chain: {clean:?}");

    // The owner's powers: no triggers, looser constraints; a pristine copy to restore from.
    loosen_audit_table(&store).await;
    let mut setup = "CREATE TABLE pristine AS SELECT * FROM audit_events;".to_owned();
    if chain.backend == Backend::Postgres {
        setup.push_str("ALTER TABLE audit_pending DISABLE TRIGGER USER;");
    }
    db::batch(&store, &setup).await.unwrap();
    let restore = match chain.backend {
        Backend::Sqlite => {
            "DELETE FROM audit_events; INSERT INTO audit_events SELECT * FROM pristine;"
        }
        Backend::Postgres => {
            "DELETE FROM audit_events; INSERT INTO audit_events SELECT * FROM pristine; \
             DELETE FROM audit_pending;"
        }
    };
    Built {
        _dir: dir,
        _broker: b,
        url,
        store,
        chain,
        keys,
        public,
        sink_url: format!("file://{}", sink_dir.display()),
        restore,
    }
}

const ALL_CLASSES: [&str; 9] = [
    "field edit",
    "row delete",
    "row insert",
    "seq swap",
    "tail truncation",
    "delete all",
    "rewrite from row k",
    "append after the newest checkpoint",
    "forged audit_pending rows",
];

/// Verified, every row covered by a checkpoint, nothing pending.
fn is_clean(r: &VerifyReport) -> bool {
    r.ok && r.pending == 0 && r.checkpoints.as_ref().is_some_and(|c| c.not_covered == 0)
}

fn check(expect: &Expect, r: &VerifyReport, chain: &Chain, context: &str) {
    assert!(
        !is_clean(r),
        "{context}\nthe mutation verifies clean: {r:?}"
    );
    let cps = r.checkpoints.as_ref().unwrap();
    let problem = r.problem.as_deref().unwrap_or_default();
    let fail = |why: &str| panic!("{context}\nexpected {expect:?}: {why}\nreport: {r:?}");
    match expect {
        Expect::Bad {
            first_bad,
            disproved_by,
        } => {
            if r.ok {
                fail("it verified");
            }
            if r.first_bad_seq != *first_bad {
                fail("another first bad seq");
            }
            if cps.disproved_by != *disproved_by {
                fail("another disproving checkpoint");
            }
            let named = match (disproved_by, first_bad) {
                (Some(n), _) => problem.starts_with(&format!("checkpoint {n} (signed ")),
                (None, Some(_)) => !problem.is_empty(),
                (None, None) => false,
            };
            if !named {
                fail("the problem does not name it");
            }
        }
        Expect::Stray(seq) => {
            if r.ok || r.first_bad_seq.is_some() || cps.disproved_by.is_some() {
                fail("not reported as a row outside the chain");
            }
            if !problem.contains("outside the chain") || !problem.contains(&format!("seq {seq}")) {
                fail("the problem does not name the row");
            }
        }
        Expect::NotCovered(n) => {
            let newest = cps.newest.as_ref().map(|c| c.number);
            if !r.ok || cps.not_covered != *n || r.pending != 0 {
                fail("not reported as not yet covered");
            }
            if newest != chain.cps.last().map(|c| c.number) || cps.disproved_by.is_some() {
                fail("the newest checkpoint does not cover the chain");
            }
        }
        Expect::Pending(n) => {
            if !r.ok || r.pending != *n || cps.not_covered != 0 {
                fail("not reported as pending");
            }
        }
    }
}

/// `jit-server audit verify --checkpoints … --public-key …`: exit 2 and the problem for a
/// tampered database, exit 0 and the note for events not yet covered.
fn command_line(url: &str, sink: &str, public: &Path, expect: &Expect, context: &str) {
    let (code, stdout, stderr) = run(Command::new(server_bin())
        .args(["audit", "verify", "--checkpoints", sink, "--public-key"])
        .arg(public)
        .env("JIT_DATABASE__URL", url)
        .env_remove("JIT_CONFIG"));
    let said = format!("{context}\nexit {code}\n{stdout}{stderr}");
    match expect {
        Expect::Bad {
            disproved_by: Some(n),
            ..
        } => assert!(
            code == 2 && stderr.contains(&format!("checkpoint {n} (signed ")),
            "{said}"
        ),
        Expect::Bad {
            first_bad: Some(seq),
            ..
        } => assert!(
            code == 2 && stderr.contains(&format!("first bad seq {seq}: ")),
            "{said}"
        ),
        Expect::Bad { .. } | Expect::Stray(_) => {
            assert!(code == 2 && stderr.contains("audit chain broken"), "{said}");
        }
        Expect::NotCovered(n) => assert!(
            code == 0
                && stdout.contains(&format!(
                    "not yet covered: {n} events after the newest checkpoint"
                )),
            "{said}"
        ),
        Expect::Pending(n) => assert!(
            code == 0 && stderr.contains(&format!("note: {n} more events are written")),
            "{said}"
        ),
    }
}

/// A random mutation of `chain`.
fn mutation(chain: &Chain, rng: &mut StdRng) -> Mutation {
    let postgres = chain.backend == Backend::Postgres;
    let classes = if postgres { 9 } else { 8 };
    let head = chain.head();
    match rng.random_range(0..classes) {
        0 => field_edit(chain, rng),
        1 => row_delete(chain, rng),
        2 => row_insert(chain, rng),
        3 => {
            let i = rng.random_range(1..head);
            let j = rng.random_range(i + 1..=head);
            Mutation {
                class: "seq swap",
                what: format!("rows {i} and {j} trade places"),
                sql: format!(
                    "UPDATE audit_events SET seq = -1 WHERE seq = {i};
                     UPDATE audit_events SET seq = {i} WHERE seq = {j};
                     UPDATE audit_events SET seq = {j} WHERE seq = -1;"
                ),
                seal: false,
                expect: chain.tampered_at(Some(i), i),
            }
        }
        4 => {
            let k = rng.random_range(2..=head);
            Mutation {
                class: "tail truncation",
                what: format!("rows from {k} on deleted"),
                sql: format!("DELETE FROM audit_events WHERE seq >= {k}"),
                seal: false,
                expect: chain.tampered_at(None, k),
            }
        }
        5 => Mutation {
            class: "delete all",
            what: "every row deleted".to_owned(),
            sql: if postgres && rng.random_bool(0.5) {
                "TRUNCATE audit_events".to_owned()
            } else {
                "DELETE FROM audit_events".to_owned()
            },
            seal: false,
            expect: chain.tampered_at(None, 1),
        },
        6 => rewrite(chain, rng),
        7 => {
            let n = rng.random_range(1..=5);
            let mut sql = String::new();
            let mut prev = chain.row(head).hash.clone();
            for seq in head + 1..=head + n {
                let row = forged(chain, rng, seq, &prev);
                prev = row.hash.clone();
                sql.push_str(&insert(&row));
            }
            Mutation {
                class: "append after the newest checkpoint",
                what: format!("{n} correctly hashed rows after seq {head}"),
                sql,
                seal: false,
                expect: Expect::NotCovered(u64::try_from(n).unwrap()),
            }
        }
        _ => {
            let n = rng.random_range(1..=5);
            let seal = rng.random_bool(0.5);
            let mut sql = String::new();
            for _ in 0..n {
                let row = forged(chain, rng, 0, GENESIS);
                let _ = write!(
                    sql,
                    "INSERT INTO audit_pending (at, actor, action, request_id, entitlement, data)
                     VALUES ({}, {}, {}, {}, {}, {});",
                    row.at,
                    lit(&row.actor),
                    lit(&row.action),
                    opt(row.request_id.as_deref()),
                    opt(row.entitlement.as_deref()),
                    lit(&row.data)
                );
            }
            let n = u64::try_from(n).unwrap();
            Mutation {
                class: "forged audit_pending rows",
                what: format!(
                    "{n} pending events{}",
                    if seal { ", chained by a broker" } else { "" }
                ),
                sql,
                seal,
                expect: if seal {
                    Expect::NotCovered(n)
                } else {
                    Expect::Pending(n)
                },
            }
        }
    }
}

/// A field of one row changed in place, its hash left as it was.
fn field_edit(chain: &Chain, rng: &mut StdRng) -> Mutation {
    let k = rng.random_range(1..=chain.head());
    let row = chain.row(k);
    let (field, value) = match rng.random_range(0..9) {
        0 => (
            "at",
            (row.at + rng.random_range(1..100_000) * if rng.random_bool(0.5) { 1 } else { -1 })
                .to_string(),
        ),
        1 => ("actor", lit(&other_than(&row.actor, rng))),
        2 => ("action", lit(&other_than(&row.action, rng))),
        3 => (
            "request_id",
            if row.request_id.is_some() && rng.random_bool(0.5) {
                "NULL".to_owned()
            } else {
                lit(&uuid::Uuid::from_u128(rng.random()).to_string())
            },
        ),
        4 => (
            "entitlement",
            if row.entitlement.is_some() && rng.random_bool(0.5) {
                "NULL".to_owned()
            } else {
                lit(&other_than(row.entitlement.as_deref().unwrap_or(""), rng))
            },
        ),
        5 => ("data", lit(&edit_data(&row.data, rng))),
        6 => ("prev_hash", lit(&random_hash(rng))),
        7 => ("hash", lit(&random_hash(rng))),
        // The owner dropped `actor`'s NOT NULL (PostgreSQL; SQLite's rebuilt table keeps it).
        _ if chain.backend == Backend::Postgres => ("actor", "NULL".to_owned()),
        _ => ("actor", lit(&format!(" {}", row.actor))),
    };
    Mutation {
        class: "field edit",
        what: format!("row {k}: {field} = {value}"),
        sql: format!("UPDATE audit_events SET {field} = {value} WHERE seq = {k}"),
        seal: false,
        expect: chain.tampered_at(Some(k), k),
    }
}

/// One to four rows deleted (when they are the tail, a truncation).
fn row_delete(chain: &Chain, rng: &mut StdRng) -> Mutation {
    let head = chain.head();
    let mut seqs: Vec<i64> = (0..rng.random_range(1..=4))
        .map(|_| rng.random_range(1..=head))
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    let first = seqs[0];
    let is_tail =
        seqs.iter().zip(first..).all(|(s, want)| *s == want) && *seqs.last().unwrap() == head;
    let list = seqs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    Mutation {
        class: "row delete",
        what: format!("rows {list} deleted"),
        sql: format!("DELETE FROM audit_events WHERE seq IN ({list})"),
        seal: false,
        expect: chain.tampered_at((!is_tail).then_some(first), first),
    }
}

/// A row inserted: into the chain at `k` (the rows after it renumbered), past the head with
/// a gap, or outside the chain's seqs.
fn row_insert(chain: &Chain, rng: &mut StdRng) -> Mutation {
    let head = chain.head();
    let sqlite = chain.backend == Backend::Sqlite;
    match rng.random_range(0..4) {
        0 | 1 => {
            // Into the chain at k, chained to row k - 1; the rows from k on move up one.
            let k = rng.random_range(1..=head);
            let prev = if k == 1 {
                GENESIS.to_owned()
            } else {
                chain.row(k - 1).hash.clone()
            };
            let mut row = forged(chain, rng, k, &prev);
            let hashed = rng.random_bool(0.5);
            if !hashed {
                row.hash = random_hash(rng);
            }
            Mutation {
                class: "row insert",
                what: format!(
                    "a {} row at seq {k}, the rows after it renumbered",
                    if hashed {
                        "correctly hashed"
                    } else {
                        "badly hashed"
                    }
                ),
                sql: format!(
                    "UPDATE audit_events SET seq = -seq - 1 WHERE seq >= {k};
                     UPDATE audit_events SET seq = -seq WHERE seq < 0;
                     {}",
                    insert(&row)
                ),
                seal: false,
                // The row at k chains; the next one (old row k, now at k + 1) does not.
                expect: chain.tampered_at(Some(if hashed { k + 1 } else { k }), k),
            }
        }
        2 => {
            let seq = head + rng.random_range(2..=10);
            let row = forged(chain, rng, seq, &chain.row(head).hash);
            Mutation {
                class: "row insert",
                what: format!("a row at seq {seq}, past a gap after the head {head}"),
                sql: insert(&row),
                seal: false,
                expect: Expect::Bad {
                    first_bad: Some(head + 1),
                    disproved_by: None,
                },
            }
        }
        3 if sqlite && rng.random_bool(0.25) => {
            // SQLite: a seq that is not a whole number, between rows k and k + 1: the walk
            // stops at k + 1, where it reads a row it cannot decode.
            let k = rng.random_range(1..=head);
            let mut row = forged(chain, rng, 0, GENESIS);
            row.hash = random_hash(rng);
            Mutation {
                class: "row insert",
                what: format!("a row at seq {k}.5, inside the chain"),
                sql: insert(&row).replacen("VALUES (0,", &format!("VALUES ({k}.5,"), 1),
                seal: false,
                expect: chain.tampered_at(Some(k + 1), k + 1),
            }
        }
        _ => {
            let choices: &[(&str, &'static str)] = if sqlite {
                &[("NULL", "NULL"), ("0", "0"), ("-3", "-3"), ("'x'", "'x'")]
            } else {
                &[("0", "0"), ("-3", "-3")]
            };
            let (value, named) = choices[rng.random_range(0..choices.len())];
            let mut row = forged(chain, rng, 0, GENESIS);
            row.hash = random_hash(rng);
            Mutation {
                class: "row insert",
                what: format!("a row at seq {value}, outside the chain"),
                sql: insert(&row).replacen("VALUES (0,", &format!("VALUES ({value},"), 1),
                seal: false,
                expect: Expect::Stray(named),
            }
        }
    }
}

/// The chain rewritten consistently from row k: one field of row k changed and every hash
/// from k on recomputed, the tail then kept, cut short or extended. Only a checkpoint that
/// covers row k can tell.
fn rewrite(chain: &Chain, rng: &mut StdRng) -> Mutation {
    let head = chain.head();
    let k = rng.random_range(1..=head);
    let end = match rng.random_range(0..3) {
        0 => rng.random_range(k..=head),
        1 => head + rng.random_range(1..=3),
        _ => head,
    };
    let mut prev = if k == 1 {
        GENESIS.to_owned()
    } else {
        chain.row(k - 1).hash.clone()
    };
    let mut sql = format!("DELETE FROM audit_events WHERE seq >= {k};");
    for seq in k..=end {
        let mut row = if seq <= head {
            chain.row(seq).clone()
        } else {
            forged(chain, rng, seq, &prev)
        };
        if seq == k {
            match rng.random_range(0..3) {
                0 => row.actor = other_than(&row.actor, rng),
                1 => row.data = edit_data(&row.data, rng),
                _ => row.at -= rng.random_range(1..3_600_000),
            }
        }
        row.prev_hash = prev;
        row.hash = hash_of(&row);
        prev = row.hash.clone();
        sql.push_str(&insert(&row));
    }
    Mutation {
        class: "rewrite from row k",
        what: format!("rows {k} to {end} rewritten and rehashed (head was {head})"),
        sql,
        seal: false,
        expect: chain.tampered_at(None, k),
    }
}

/// A plausible event at `seq` after `prev`: a real row's content, another actor, hashed.
fn forged(chain: &Chain, rng: &mut StdRng, seq: i64, prev: &str) -> Event {
    let model = chain.row(rng.random_range(1..=chain.head()));
    let mut row = Event {
        seq,
        at: model.at + 1,
        actor: "mallory@example.com".to_owned(),
        action: model.action.clone(),
        request_id: model.request_id.clone(),
        entitlement: model.entitlement.clone(),
        data: model.data.clone(),
        prev_hash: prev.to_owned(),
        hash: String::new(),
        pending: false,
    };
    row.hash = hash_of(&row);
    row
}

fn hash_of(row: &Event) -> String {
    audit::chain_hash(&Canonical {
        seq: row.seq,
        at: row.at,
        actor: &row.actor,
        action: &row.action,
        request_id: row.request_id.as_deref(),
        entitlement: row.entitlement.as_deref(),
        data: &row.data,
        prev_hash: &row.prev_hash,
    })
}

fn insert(row: &Event) -> String {
    format!(
        "INSERT INTO audit_events (seq, at, actor, action, request_id, entitlement, data, prev_hash, hash)
         VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {});",
        row.seq,
        row.at,
        lit(&row.actor),
        lit(&row.action),
        opt(row.request_id.as_deref()),
        opt(row.entitlement.as_deref()),
        lit(&row.data),
        lit(&row.prev_hash),
        lit(&row.hash)
    )
}

/// A change to an event's JSON text: a field added, or a byte of it changed.
fn edit_data(data: &str, rng: &mut StdRng) -> String {
    if rng.random_bool(0.5) && data.starts_with('{') && data.len() > 2 {
        format!("{{\"forged\":true,{}", &data[1..])
    } else {
        format!("{data} ")
    }
}

fn other_than(value: &str, rng: &mut StdRng) -> String {
    let pick = [
        "mallory@example.com",
        "alice@example.com",
        "system",
        "grant.revoked",
        "request.approved",
        "aws-prod-admin",
    ][rng.random_range(0..6)];
    if pick == value {
        format!("{value}x")
    } else {
        pick.to_owned()
    }
}

fn random_hash(rng: &mut StdRng) -> String {
    hex::encode(rng.random::<[u8; 32]>())
}

/// An SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn opt(s: Option<&str>) -> String {
    s.map_or_else(|| "NULL".to_owned(), lit)
}
