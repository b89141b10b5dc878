//! Tests of the store: the account writes the auth pool hands over, every
//! op's meaning, their order, batches, failures, retention, the snapshot,
//! and durability. Temporary database files, no sockets.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::accounts::{AuthLink, NewAccount, Rehash, Write};
use super::ops::{Answer, Change, HistoryOf, LOBBY, Message, Op, Reply, RoomRow, Snapshot};
use super::writer::{Cmd, Writer, unix_now};
use super::*;
use crate::auth::Done;
use crate::auth::costs::Costs;
use crate::session::{AuthOutcome, ConnId};

/// How long a test waits for an answer it expects.
const ANSWER: Duration = Duration::from_secs(10);

/// A fresh database with the current schema: its directory (delete it
/// last), its path, and a connection to look at it.
fn migrated() -> (tempfile::TempDir, std::path::PathBuf, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accounts.db");
    let (conn, access) = open(&path).unwrap();
    migrate(&conn, access, &path).unwrap();
    (dir, path, conn)
}

/// The writer counts the hashes by cost as it stores them, and tells
/// the workers the most common one; a re-hash whose old hash has gone
/// changes nothing.
#[test]
fn the_writer_keeps_the_cost_of_unknown_names_up_to_date() {
    let (_dir, path, conn) = migrated();
    let (done_tx, done_rx) = mpsc::channel();
    let mut w = writer(&path, done_tx);
    let link = w.link.as_mut().expect("linked");
    link.costs = Costs::new(5);
    let unknown = link.unknown_cost.clone();
    let hash = |cost: u32, n: char| format!("$2b${cost:02}${}", n.to_string().repeat(53));
    let (write_tx, write_rx) = mpsc::channel();
    let handle = std::thread::spawn(move || w.run(&write_rx));
    let register = |key: usize, name: char, cost: u32| {
        write_tx
            .send(Cmd::Account(Write::Register(NewAccount {
                conn: ConnId { key, serial: 1 },
                name: name.to_string(),
                hash: hash(cost, name),
                created_at: 0,
                cancel: Arc::new(AtomicBool::new(false)),
                panic: false,
            })))
            .unwrap();
        let done = done_rx.recv_timeout(ANSWER).expect("the writer answers");
        assert_eq!(done.outcome, AuthOutcome::Registered(name.to_string()));
    };
    let rehash = |name: char, old: String| {
        write_tx
            .send(Cmd::Account(Write::Rehash(Rehash {
                name: name.to_string(),
                old,
                new: hash(5, name),
            })))
            .unwrap();
    };
    for (key, name) in [(1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')] {
        register(key, name, 4);
    }
    assert_eq!(unknown.load(Ordering::Relaxed), 4);
    // 4: b, c, d; 5: a.
    rehash('a', hash(4, 'a'));
    // b's hash is not the one the re-hash replaces: it stays.
    rehash('b', hash(4, 'x'));
    // 4: b, c, d; 5: a, z. (Counting b as moved would make it a tie,
    // and a tie goes to the configured cost, 5.)
    register(5, 'z', 5);
    assert_eq!(unknown.load(Ordering::Relaxed), 4);
    // 4: b, d; 5: a, c, z.
    rehash('c', hash(4, 'c'));
    let deadline = Instant::now() + ANSWER;
    while unknown.load(Ordering::Relaxed) != 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(unknown.load(Ordering::Relaxed), 5);
    let hashes: Vec<String> = conn
        .prepare("SELECT hash FROM users ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        hashes,
        [
            hash(5, 'a'),
            hash(4, 'b'),
            hash(5, 'c'),
            hash(4, 'd'),
            hash(5, 'z')
        ]
    );
    drop(write_tx);
    handle.join().unwrap();
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accounts.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let err = Store::start(StoreConfig::new(path), Arc::new(|| {}))
        .err()
        .expect("refused");
    assert_eq!(err.kind(), ErrorKind::SchemaTooNew);
}
/// A writer on the database at `path`, answering on `done`.
fn writer(path: &Path, done: Sender<Done>) -> Writer {
    let (conn, _) = open(path).unwrap();
    Writer {
        conn: Some(conn),
        writable: true,
        answers: mpsc::channel().0,
        changes: mpsc::channel().0,
        last_change: 0,
        wake: Arc::new(|| {}),
        link: Some(AuthLink {
            done,
            wake: Arc::new(|| {}),
            costs: Costs::new(4),
            unknown_cost: Arc::new(AtomicU32::new(4)),
        }),
        queued: Arc::new(AtomicUsize::new(0)),
        history_days: None,
        retention: Retention::default(),
        clock: Arc::new(unix_now),
        failed: false,
        blobs: None,
    }
}

fn write(key: usize, name: &str, cancelled: bool, panic: bool) -> Cmd {
    Cmd::Account(Write::Register(NewAccount {
        conn: ConnId { key, serial: 1 },
        name: name.into(),
        hash: format!("hash of {name}"),
        created_at: 0,
        cancel: Arc::new(AtomicBool::new(cancelled)),
        panic,
    }))
}

pub(crate) fn names(conn: &Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM users ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The answers on `done` for `n` connections, by key, each arriving
/// within `within`.
pub(crate) fn answers(
    done: &Receiver<Done>,
    n: usize,
    within: Duration,
) -> Vec<(usize, AuthOutcome)> {
    let mut got: Vec<(usize, AuthOutcome)> = (0..n)
        .map(|i| {
            let d = done
                .recv_timeout(within)
                .unwrap_or_else(|e| panic!("answer {i} of {n} not within {within:?}: {e}"));
            (d.conn.key, d.outcome)
        })
        .collect();
    got.sort_by_key(|(key, _)| *key);
    got
}

/// Registrations waiting together are committed in one transaction,
/// each with its own answer; a panic in the batch stores none of it,
/// and the writer goes on.
#[test]
fn the_writer_commits_a_batch_with_one_answer_each() {
    let (_dir, path, conn) = migrated();
    let (done_tx, done_rx) = mpsc::channel();

    // Queued before the writer starts, so they form one batch.
    let (write_tx, write_rx) = mpsc::channel();
    for w in [
        write(1, "carol", false, false),
        write(2, "CAROL", false, false),
        write(3, "dave", true, false),
        write(4, "erin", false, false),
    ] {
        write_tx.send(w).unwrap();
    }
    let w = writer(&path, done_tx.clone());
    let handle = std::thread::spawn(move || w.run(&write_rx));
    assert_eq!(
        answers(&done_rx, 4, ANSWER),
        [
            (1, AuthOutcome::Registered("carol".into())),
            (2, AuthOutcome::NameTaken),
            (3, AuthOutcome::Unavailable),
            (4, AuthOutcome::Registered("erin".into())),
        ]
    );
    assert_eq!(names(&conn), ["carol", "erin"]);

    // A batch that panics part-way stores none of it.
    let (write_tx2, write_rx2) = mpsc::channel();
    for w in [
        write(5, "frank", false, false),
        write(6, "grace", false, true),
        write(7, "heidi", false, false),
    ] {
        write_tx2.send(w).unwrap();
    }
    let w = writer(&path, done_tx);
    let handle2 = std::thread::spawn(move || w.run(&write_rx2));
    assert_eq!(
        answers(&done_rx, 3, ANSWER),
        [
            (5, AuthOutcome::Unavailable),
            (6, AuthOutcome::Unavailable),
            (7, AuthOutcome::Unavailable),
        ]
    );
    assert_eq!(names(&conn), ["carol", "erin"]);
    // The writer is still serving, and holds no lock.
    write_tx2.send(write(8, "frank", false, false)).unwrap();
    assert_eq!(
        answers(&done_rx, 1, ANSWER),
        [(8, AuthOutcome::Registered("frank".into()))]
    );
    assert_eq!(names(&conn), ["carol", "erin", "frank"]);
    drop((write_tx, write_tx2));
    handle.join().unwrap();
    handle2.join().unwrap();
}

#[test]
fn immutable_uri_escapes_what_uris_reserve() {
    assert_eq!(
        immutable_uri(Path::new("/tmp/a b/x?y#z%.db")),
        "file:/tmp/a%20b/x%3Fy%23z%25.db?immutable=1"
    );
}

/// Opened read-only (as SQLite does by itself with a write-protected
/// file; root ignores file modes, so the flag stands in for them here),
/// a database with the current schema is used as it is, and one that
/// needs migrating is refused with a message that says so.
#[test]
fn a_read_only_database_is_used_as_it_is_or_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accounts.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE old (x)")
        .unwrap();
    let ro = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let err = migrate(&ro, Access::ReadOnly, &path).expect_err("needs migrating");
    assert_eq!(err.kind(), ErrorKind::ReadOnly);
    assert!(
        err.to_string().contains("read-only") && err.to_string().contains("version 0"),
        "{err}"
    );
    drop(ro);

    let (rw, access) = open(&path).unwrap();
    migrate(&rw, access, &path).unwrap();
    drop(rw);
    let ro = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    migrate(&ro, Access::ReadOnly, &path).expect("already migrated: nothing to write");
}
// ---- the store thread and its ops ----

/// A store on a fresh database in `dir`, `tweak`ed, and the wakes it makes.
fn store_in(dir: &Path, tweak: impl FnOnce(&mut StoreConfig)) -> (Store, Snapshot, Receiver<()>) {
    let mut config = StoreConfig::new(dir.join("chat.db"));
    tweak(&mut config);
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let wake = Arc::new(move || {
        let _ = tx.lock().map(|t| t.send(()));
    });
    let (store, snapshot) = Store::start(config, wake).expect("store starts");
    (store, snapshot, rx)
}

fn conn_id(key: usize) -> ConnId {
    ConnId { key, serial: 1 }
}

fn public(id: u64, room: &str, n: u64, sender: &str, text: &str) -> Message {
    Message {
        id,
        room: Some(room.into()),
        n,
        sender: sender.into(),
        recipient: None,
        at: 1_000 + id as i64,
        me: false,
        text: text.into(),
    }
}

fn private(id: u64, sender: &str, recipient: &str, text: &str) -> Message {
    Message {
        id,
        room: None,
        n: 0,
        sender: sender.into(),
        recipient: Some(recipient.into()),
        at: 1_000 + id as i64,
        me: false,
        text: text.into(),
    }
}

#[track_caller]
fn send(store: &Store, op: Op) {
    store.send(op).expect("the store takes it");
}

/// The next answer, waited for.
#[track_caller]
fn answer(store: &Store) -> Answer {
    let deadline = Instant::now() + ANSWER;
    loop {
        if let Some(answer) = store.try_recv() {
            return answer;
        }
        assert!(Instant::now() < deadline, "no answer within {ANSWER:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[track_caller]
fn load(store: &Store, account: &str) -> Result<ops::AccountState, Error> {
    send(
        store,
        Op::Load {
            conn: conn_id(7),
            account: account.into(),
        },
    );
    let got = answer(store);
    assert_eq!(got.conn, conn_id(7));
    match got.reply {
        Reply::Loaded(state) => state,
        other => panic!("not a load: {other:?}"),
    }
}

#[track_caller]
fn history(
    store: &Store,
    account: &str,
    of: HistoryOf,
    limit: usize,
    before: Option<u64>,
) -> Vec<u64> {
    send(
        store,
        Op::History {
            conn: conn_id(8),
            account: account.into(),
            of,
            limit,
            before,
        },
    );
    match answer(store).reply {
        Reply::History(found) => found.expect("history reads").iter().map(|m| m.id).collect(),
        other => panic!("not history: {other:?}"),
    }
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

#[test]
fn a_fresh_database_has_the_lobby_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (store, snapshot, _) = store_in(dir.path(), |_| {});
    assert_eq!(
        snapshot,
        Snapshot {
            last_id: 0,
            rooms: vec![RoomRow {
                name: LOBBY.into(),
                ..RoomRow::default()
            }],
            ..Snapshot::default()
        }
    );
    assert!(store.shutdown(ANSWER));
}

/// A load sent after a private message to an offline account sees it,
/// though both may be in one batch; it changes nothing, and `Delivered`
/// marks what was handed over (only up to its id).
#[test]
fn a_load_after_a_message_to_an_offline_recipient_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = store_in(dir.path(), |_| {});
    let m = private(1, "alice", "Bob", "hello");
    send(
        &store,
        Op::Message {
            message: m.clone(),
            pending: true,
        },
    );
    let state = load(&store, "bob").expect("loads");
    assert_eq!(state.offline, [m]);
    assert_eq!(state.offline_older, 0);
    assert_eq!(state.lobby_seen, None, "never online");
    // A login that failed halfway: still there.
    assert_eq!(load(&store, "BOB").expect("loads").offline.len(), 1);
    send(
        &store,
        Op::Message {
            message: private(2, "carol", "bob", "later"),
            pending: true,
        },
    );
    send(
        &store,
        Op::Delivered {
            account: "BOB".to_owned(),
            up_to: 1,
        },
    );
    let state = load(&store, "bob").expect("loads");
    let ids: Vec<u64> = state.offline.iter().map(|m| m.id).collect();
    assert_eq!(ids, [2], "only what was handed over is delivered");
    assert!(store.shutdown(ANSWER));
}

/// The newest 200 offline messages, oldest first, the rest counted;
/// messages not pending are not offline; `Delivered` clears the counted
/// ones too.
#[test]
fn offline_messages_are_the_newest_200_and_all_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = store_in(dir.path(), |_| {});
    send(
        &store,
        Op::Message {
            message: private(1, "alice", "bob", "seen live"),
            pending: false,
        },
    );
    for id in 2..=206 {
        send(
            &store,
            Op::Message {
                message: private(id, "alice", "bob", &format!("m{id}")),
                pending: true,
            },
        );
    }
    let state = load(&store, "bob").expect("loads");
    let ids: Vec<u64> = state.offline.iter().map(|m| m.id).collect();
    assert_eq!(ids, (7..=206).collect::<Vec<_>>());
    assert_eq!(state.offline_older, 5);
    assert_eq!(state.older_by, [("alice".to_owned(), 5)]);
    send(
        &store,
        Op::Delivered {
            account: "bob".to_owned(),
            up_to: 206,
        },
    );
    let again = load(&store, "bob").expect("loads");
    assert!(again.offline.is_empty() && again.offline_older == 0);
    assert!(store.shutdown(ANSWER));
}

/// Rooms, members and cursors: what a login reads back, and what the
/// next start's snapshot says.
#[test]
fn rooms_members_and_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = store_in(dir.path(), |c| c.ring = 2);
    let ops = [
        Op::CreateRoom {
            name: "rust".into(),
            owner: "alice".into(),
            at: 5,
        },
        Op::CreateRoom {
            name: "go".into(),
            owner: "bob".into(),
            at: 6,
        },
        Op::Join {
            room: "go".into(),
            account: "Alice".into(),
            seen: 0,
        },
        Op::Topic {
            room: "rust".into(),
            topic: Some("crabs".into()),
            by: "alice".into(),
        },
        Op::Message {
            message: public(1, LOBBY, 1, "alice", "hi all"),
            pending: false,
        },
        Op::Message {
            message: public(2, "rust", 1, "alice", "r1"),
            pending: false,
        },
        Op::Message {
            message: public(3, "rust", 2, "alice", "r2"),
            pending: false,
        },
        Op::Message {
            message: public(4, "rust", 3, "bob", "r3"),
            pending: false,
        },
        Op::Part {
            room: "go".into(),
            account: "bob".into(),
        },
        // Cursors: the lobby is always stored, a room only for a member
        // (alice is not in "c", bob no longer in "go").
        Op::Seen {
            account: "alice".into(),
            seen: vec![
                (LOBBY.into(), 1),
                ("go".into(), 0),
                ("rust".into(), 2),
                ("c".into(), 9),
            ],
        },
        Op::Seen {
            account: "bob".into(),
            seen: vec![(LOBBY.into(), 1), ("go".into(), 4)],
        },
    ];
    for op in ops {
        send(&store, op);
    }
    let alice = load(&store, "ALICE").expect("loads");
    assert_eq!(alice.lobby_seen, Some(1));
    assert_eq!(alice.rooms, [("go".into(), 0), ("rust".into(), 2)]);
    let bob = load(&store, "bob").expect("loads");
    assert_eq!((bob.lobby_seen, bob.rooms), (Some(1), vec![]));
    assert!(store.flush(ANSWER));
    assert!(store.shutdown(ANSWER));

    let (store, snapshot, _) = store_in(dir.path(), |c| c.ring = 2);
    assert_eq!(snapshot.last_id, 4);
    let names: Vec<&str> = snapshot.rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [LOBBY, "go", "rust"]);
    let [lobby, go, rust] = &snapshot.rooms[..] else {
        panic!("three rooms");
    };
    assert_eq!(
        (lobby.count, lobby.members.len(), lobby.owner.clone()),
        (1, 0, None)
    );
    assert_eq!(lobby.recent, [public(1, LOBBY, 1, "alice", "hi all")]);
    assert_eq!(
        (go.count, go.members.clone(), go.owner.as_deref()),
        (0, vec!["Alice".to_owned()], Some("bob"))
    );
    assert_eq!(go.topic, None);
    assert_eq!(rust.count, 3);
    assert_eq!(rust.members, ["alice"]);
    assert_eq!(rust.topic, Some(("crabs".into(), "alice".into())));
    let recent: Vec<u64> = rust.recent.iter().map(|m| m.id).collect();
    assert_eq!(recent, [3, 4], "the ring's newest two, oldest first");

    // Clearing the topic; deleting a room takes its members and messages.
    send(
        &store,
        Op::Topic {
            room: "rust".into(),
            topic: None,
            by: "alice".into(),
        },
    );
    send(&store, Op::DeleteRoom { name: "go".into() });
    send(
        &store,
        Op::DeleteRoom {
            name: "rust".into(),
        },
    );
    // The lobby is never deleted.
    send(&store, Op::DeleteRoom { name: LOBBY.into() });
    assert_eq!(load(&store, "alice").expect("loads").rooms, []);
    assert!(store.shutdown(ANSWER));
    let (conn, _) = open(&dir.path().join("chat.db")).unwrap();
    assert_eq!(count(&conn, "SELECT count(*) FROM rooms"), 1);
    assert_eq!(count(&conn, "SELECT count(*) FROM messages"), 1);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM members WHERE room <> 'lobby'"),
        0
    );
}

/// `/history` of a room, and of a private conversation both ways, oldest
/// first, below `before`, at most `limit`.
#[test]
fn history_reads_a_room_or_a_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = store_in(dir.path(), |_| {});
    let messages = [
        public(1, LOBBY, 1, "alice", "a"),
        private(2, "alice", "bob", "to bob"),
        private(3, "Bob", "alice", "to alice"),
        private(4, "carol", "alice", "not bob"),
        public(5, LOBBY, 2, "bob", "b"),
        private(6, "alice", "BOB", "again"),
        public(7, "rust", 1, "bob", "elsewhere"),
    ];
    for m in messages {
        send(
            &store,
            Op::Message {
                message: m,
                pending: false,
            },
        );
    }
    let lobby = || HistoryOf::Room(LOBBY.into());
    assert_eq!(history(&store, "x", lobby(), 20, None), [1, 5]);
    assert_eq!(history(&store, "x", lobby(), 1, None), [5]);
    assert_eq!(history(&store, "x", lobby(), 20, Some(5)), [1]);
    let bob = || HistoryOf::Private("bob".into());
    assert_eq!(history(&store, "alice", bob(), 20, None), [2, 3, 6]);
    assert_eq!(history(&store, "ALICE", bob(), 2, None), [3, 6]);
    assert_eq!(history(&store, "alice", bob(), 2, Some(6)), [2, 3]);
    let alice = HistoryOf::Private("alice".into());
    assert_eq!(history(&store, "bob", alice, 20, None), [2, 3, 6]);
    assert!(store.shutdown(ANSWER));
}

/// Ops waiting together are carried out in one transaction and answered
/// with one wake; an op that fails (a message id stored already) is
/// skipped and the rest of its batch goes on.
#[test]
fn a_batch_is_one_transaction_with_one_wake() {
    let (_dir, path, conn) = migrated();
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let (answer_tx, answer_rx) = mpsc::channel();
    let wakes = Arc::new(AtomicUsize::new(0));
    let mut w = writer(&path, mpsc::channel().0);
    w.answers = answer_tx;
    let counted = wakes.clone();
    w.wake = Arc::new(move || {
        counted.fetch_add(1, Ordering::Relaxed);
    });
    let op = |op| Cmd::Op { op, cost: 0 };
    let before = count(&conn, "PRAGMA data_version");
    for cmd in [
        op(Op::Message {
            message: private(1, "alice", "bob", "one"),
            pending: true,
        }),
        op(Op::Message {
            message: private(1, "alice", "bob", "the same id"),
            pending: true,
        }),
        op(Op::Message {
            message: private(2, "alice", "bob", "two"),
            pending: true,
        }),
        op(Op::Load {
            conn: conn_id(1),
            account: "bob".into(),
        }),
        op(Op::Load {
            conn: conn_id(2),
            account: "bob".into(),
        }),
    ] {
        cmd_tx.send(cmd).unwrap();
    }
    drop(cmd_tx);
    std::thread::spawn(move || w.run(&cmd_rx)).join().unwrap();
    let got: Vec<(usize, usize)> = answer_rx
        .try_iter()
        .map(|a| match a.reply {
            Reply::Loaded(state) => (a.conn.key, state.expect("loads").offline.len()),
            other => panic!("{other:?}"),
        })
        .collect();
    // A load changes nothing: both see the two.
    assert_eq!(got, [(1, 2), (2, 2)]);
    assert_eq!(wakes.load(Ordering::Relaxed), 1);
    // Another connection sees one commit.
    assert_eq!(count(&conn, "PRAGMA data_version"), before + 1);
    assert_eq!(count(&conn, "SELECT count(*) FROM messages"), 2);
}

/// A panic inside a batch stores none of it, answers its reads `Err`,
/// and the thread serves the next batch.
#[test]
fn a_batch_that_panics_stores_nothing_and_answers_err() {
    let (_dir, path, conn) = migrated();
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let (answer_tx, answer_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let mut w = writer(&path, done_tx);
    w.answers = answer_tx;
    let op = |op| Cmd::Op { op, cost: 0 };
    let (flushed_tx, flushed_rx) = mpsc::channel();
    for cmd in [
        op(Op::Message {
            message: private(1, "alice", "bob", "lost"),
            pending: true,
        }),
        write(1, "grace", false, true),
        op(Op::Load {
            conn: conn_id(2),
            account: "bob".into(),
        }),
        Cmd::Barrier(flushed_tx),
    ] {
        cmd_tx.send(cmd).unwrap();
    }
    let handle = std::thread::spawn(move || w.run(&cmd_rx));
    assert!(
        !flushed_rx.recv_timeout(ANSWER).unwrap(),
        "the batch failed"
    );
    assert_eq!(
        done_rx.recv_timeout(ANSWER).unwrap().outcome,
        AuthOutcome::Unavailable
    );
    match answer_rx.recv_timeout(ANSWER).unwrap().reply {
        Reply::Loaded(Err(e)) => assert_eq!(e.kind(), ErrorKind::Database),
        other => panic!("{other:?}"),
    }
    assert_eq!(count(&conn, "SELECT count(*) FROM messages"), 0);
    cmd_tx
        .send(op(Op::Message {
            message: private(1, "alice", "bob", "kept"),
            pending: true,
        }))
        .unwrap();
    let (flushed_tx, flushed_rx) = mpsc::channel();
    cmd_tx.send(Cmd::Barrier(flushed_tx)).unwrap();
    assert!(flushed_rx.recv_timeout(ANSWER).unwrap());
    assert_eq!(count(&conn, "SELECT count(*) FROM messages"), 1);
    drop(cmd_tx);
    handle.join().unwrap();
}

/// Another program holding the write lock past `BUSY_TIMEOUT`: the
/// batch's writes are lost (logged, no panic) but its reads are answered
/// from the disk, and the next batch goes through.
#[test]
fn a_locked_database_still_answers_reads_and_the_thread_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = store_in(dir.path(), |_| {});
    let other = Connection::open(dir.path().join("chat.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    send(
        &store,
        Op::Message {
            message: private(7, "alice", "bob", "lost to the lock"),
            pending: true,
        },
    );
    let state = load(&store, "bob").expect("reads go on");
    assert!(state.offline.is_empty(), "{state:?}");
    assert!(!store.flush(ANSWER), "a flush says writes were lost");
    other.execute_batch("COMMIT").unwrap();
    send(
        &store,
        Op::Message {
            message: private(1, "alice", "bob", "after"),
            pending: true,
        },
    );
    assert_eq!(load(&store, "bob").expect("loads").offline.len(), 1);
    assert!(store.shutdown(ANSWER));
}

/// A database opened read-only: reads are answered (offline messages stay
/// pending, there is nowhere to mark them), writes and registrations are
/// refused without an error reaching anybody as a panic.
#[test]
fn a_read_only_database_answers_reads_and_drops_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.db");
    let (store, _, _) = store_in(dir.path(), |_| {});
    send(
        &store,
        Op::Message {
            message: private(1, "alice", "bob", "waiting"),
            pending: true,
        },
    );
    assert!(store.shutdown(ANSWER));
    let ro = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let config = StoreConfig::new(&path);
    let store = Store::spawn(ro, Access::ReadOnly, &config, 0, Arc::new(|| {})).unwrap();
    assert!(!store.writable());
    send(
        &store,
        Op::Message {
            message: private(2, "alice", "bob", "dropped"),
            pending: true,
        },
    );
    for _ in 0..2 {
        let state = load(&store, "bob").expect("reads");
        assert_eq!(state.offline.len(), 1, "still pending: {state:?}");
    }
    assert_eq!(
        history(&store, "alice", HistoryOf::Private("bob".into()), 9, None),
        [1]
    );
    assert!(store.flush(ANSWER));
    assert!(store.shutdown(ANSWER));

    // A connection that cannot write, taken for one that can: the write
    // fails with SQLite's error, logged, not a panic.
    let ro = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let store = Store::spawn(ro, Access::ReadWrite, &config, 0, Arc::new(|| {})).unwrap();
    send(
        &store,
        Op::Message {
            message: private(3, "alice", "bob", "refused"),
            pending: true,
        },
    );
    // The write fails (logged), the read after it is still answered.
    let state = load(&store, "bob").expect("reads");
    assert!(state.offline.iter().all(|m| m.id != 3), "{state:?}");
    assert!(store.shutdown(ANSWER));
}

/// Past `max_queue` bytes waiting, a message is refused (the loop is told,
/// nothing blocks); other ops are still taken.
#[test]
fn a_full_queue_refuses_messages_only() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = store_in(dir.path(), |c| c.max_queue = 0);
    let refused = store.send(Op::Message {
        message: private(1, "alice", "bob", "x"),
        pending: true,
    });
    assert_eq!(refused, Err(Refused::Full));
    assert!(load(&store, "bob").expect("loads").offline.is_empty());
    assert!(store.shutdown(ANSWER));
}

/// What `flush` confirmed is in the file, for any other connection; after
/// `shutdown` the write-ahead log is checkpointed and gone.
#[test]
fn everything_is_durable_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.db");
    let (store, _, _) = store_in(dir.path(), |_| {});
    for id in 1..=100 {
        send(
            &store,
            Op::Message {
                message: public(id, LOBBY, id, "alice", "x"),
                pending: false,
            },
        );
    }
    assert!(store.flush(ANSWER));
    let other = Connection::open(&path).unwrap();
    assert_eq!(count(&other, "SELECT count(*) FROM messages"), 100);
    assert_eq!(
        count(&other, "SELECT count FROM rooms WHERE name = 'lobby'"),
        100
    );
    drop(other);
    assert!(store.shutdown(ANSWER));
    assert!(!dir.path().join("chat.db-wal").exists(), "checkpointed");
    let (_, snapshot, _) = store_in(dir.path(), |_| {});
    assert_eq!(snapshot.last_id, 100);
    assert_eq!(snapshot.rooms[0].recent.len(), 100);
}

/// Expiry deletes what is older than `--history-days`, a batch per
/// transaction, oldest first; room counts stay.
#[test]
fn old_messages_expire_in_small_batches() {
    let (_dir, _path, conn) = migrated();
    let day = 86_400;
    for id in 1..=5u64 {
        let mut m = public(id, LOBBY, id, "alice", "old");
        m.at = id as i64;
        messages::insert(&conn, &m, false).unwrap();
    }
    let mut recent = public(6, LOBBY, 6, "alice", "new");
    recent.at = 10 * day;
    messages::insert(&conn, &recent, false).unwrap();
    // (The store thread raises the count once per batch.)
    messages::raise_count(&conn, LOBBY, 6).unwrap();
    let cutoff = 10 * day - 2 * day;
    let batches: Vec<usize> = (0..4)
        .map(|_| messages::expire(&conn, cutoff, 2).unwrap())
        .collect();
    assert_eq!(batches, [2, 2, 1, 0]);
    assert_eq!(count(&conn, "SELECT count(*) FROM messages"), 1);
    assert_eq!(
        count(&conn, "SELECT count FROM rooms WHERE name = 'lobby'"),
        6
    );
}

/// The thread expires on its own, on the clock it is given, and stays
/// responsive meanwhile.
#[test]
fn the_store_thread_expires_on_its_clock() {
    let dir = tempfile::tempdir().unwrap();
    let day = 86_400;
    let (store, _, _) = store_in(dir.path(), |c| {
        c.history_days = Some(30);
        c.clock = Arc::new(move || 100 * day);
        c.retention = Retention {
            every: Duration::from_millis(20),
            again: Duration::from_millis(1),
            batch: 3,
        };
    });
    for id in 1..=10u64 {
        let mut m = public(id, LOBBY, id, "alice", "x");
        m.at = if id <= 8 { 60 * day } else { 90 * day };
        send(
            &store,
            Op::Message {
                message: m,
                pending: false,
            },
        );
    }
    let deadline = Instant::now() + ANSWER;
    loop {
        let left = history(&store, "x", HistoryOf::Room(LOBBY.into()), 20, None);
        if left == [9, 10] {
            break;
        }
        assert!(Instant::now() < deadline, "still {left:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(store.shutdown(ANSWER));
}

/// Files older than the history go with it: their rows, their bytes once
/// no row points at them, and the loop is told whose quota shrank.
#[test]
fn expired_files_lose_their_rows_and_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let day = 86_400;
    let blobs = crate::files::Blobs::open(&dir.path().join("chat.db")).unwrap();
    let stored = |bytes: &[u8], slot: &str| {
        let mut part = blobs.begin(slot, bytes.len() as u64).unwrap();
        part.write(bytes).unwrap();
        part.finish().unwrap()
    };
    // Bytes stored before the start, with no row, would be swept then.
    let stray = stored(b"stray bytes", "s");
    let (store, _, _) = store_in(dir.path(), |c| {
        c.history_days = Some(30);
        c.clock = Arc::new(move || 100 * day);
        c.blobs = Some(blobs.clone());
        c.retention = Retention {
            every: Duration::from_millis(20),
            again: Duration::from_millis(1),
            batch: 10,
        };
    });
    assert!(!blobs.path_of(&stray.sha).exists(), "swept at start");
    let (old, kept) = (stored(b"old bytes", "a"), stored(b"kept bytes", "b"));
    let row = |id: &str, sha, size, at| crate::store::ops::FileRow {
        id: id.into(),
        sha,
        owner: "alice".into(),
        name: format!("{id}.txt"),
        size,
        mime: "application/octet-stream".into(),
        inline: false,
        room: LOBBY.into(),
        created_at: at,
    };
    let conn = ConnId { key: 1, serial: 1 };
    // The new row first: expiry may run between any two of these.
    for r in [
        row("new", kept.sha, 10, 90 * day),
        row("old2", kept.sha, 10, 10 * day),
        row("old1", old.sha, 9, 10 * day),
    ] {
        send(&store, Op::RecordFile { conn, row: r });
        let reply = answer(&store).reply;
        assert!(matches!(reply, Reply::FileRecorded(Ok(()))), "{reply:?}");
    }
    // Perhaps in more than one pass.
    let deadline = Instant::now() + ANSWER;
    let mut freed = 0;
    while freed < 19 {
        if let Some(Change::FilesExpired(rows)) = store.try_change() {
            freed += rows.iter().map(|(_, n)| n).sum::<u64>();
        }
        assert!(Instant::now() < deadline, "{freed} bytes expired");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(store.try_change().is_none(), "nothing more expired");
    assert!(!blobs.path_of(&old.sha).exists(), "nobody points at it");
    assert!(blobs.path_of(&kept.sha).exists(), "\"new\" still does");
    send(
        &store,
        Op::FindFile {
            conn,
            id: "old1".into(),
        },
    );
    assert!(matches!(answer(&store).reply, Reply::File(Ok(None))));
    send(
        &store,
        Op::FindFile {
            conn,
            id: "new".into(),
        },
    );
    assert!(matches!(answer(&store).reply, Reply::File(Ok(Some(_)))));
    // A row whose bytes are gone is not recorded.
    send(
        &store,
        Op::RecordFile {
            conn,
            row: row("ghost", old.sha, 9, 99 * day),
        },
    );
    assert!(matches!(answer(&store).reply, Reply::FileRecorded(Err(_))));
    assert!(store.shutdown(ANSWER));
}

fn token_reply(store: &Store) -> Reply {
    answer(store).reply
}

#[test]
fn tokens_are_stored_hashed_checked_by_expiry_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = store_in(dir.path(), |_| {});
    let path = dir.path().join("chat.db");
    let db = Connection::open(&path).unwrap();
    db.execute(
        "INSERT INTO users (name, hash, created_at) VALUES ('Alice', 'x', 1)",
        [],
    )
    .unwrap();
    let (a, b) = ([1u8; 32], [2u8; 32]);
    for (hash, expires_at) in [(a, 2_000), (b, 5_000)] {
        send(
            &store,
            Op::CreateToken {
                conn: conn_id(1),
                account: "alice".into(),
                hash,
                created_at: 1_000,
                expires_at,
            },
        );
        assert!(matches!(token_reply(&store), Reply::TokenStored(Ok(()))));
    }
    let check = |hash, now| {
        send(
            &store,
            Op::CheckToken {
                conn: conn_id(2),
                hash,
                now,
            },
        );
        match token_reply(&store) {
            Reply::TokenAccount(Ok(found)) => found,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(check(a, 1_999), Some("Alice".to_owned()), "as registered");
    assert_eq!(check(a, 2_000), None, "expired");
    assert_eq!(check([3; 32], 1_000), None, "unknown");
    send(
        &store,
        Op::RevokeToken {
            conn: Some(conn_id(3)),
            hash: b,
        },
    );
    assert!(matches!(token_reply(&store), Reply::Revoked(Ok(()))));
    assert_eq!(check(b, 1_000), None, "revoked");
    // What is kept is the hash, never a token.
    let stored: Vec<u8> = db
        .query_row("SELECT hash FROM tokens", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, a);
    send(
        &store,
        Op::RevokeTokens {
            conn: None,
            account: "ALICE".into(),
        },
    );
    assert!(store.flush(ANSWER));
    assert_eq!(count(&db, "SELECT count(*) FROM tokens"), 0);
    assert!(store.shutdown(ANSWER));
}

#[test]
fn a_revocation_that_cannot_be_stored_answers_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.db");
    let (store, _, _) = store_in(dir.path(), |_| {});
    assert!(store.shutdown(ANSWER));
    let ro = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let config = StoreConfig::new(&path);
    let store = Store::spawn(ro, Access::ReadOnly, &config, 0, Arc::new(|| {})).unwrap();
    send(
        &store,
        Op::RevokeTokens {
            conn: Some(conn_id(1)),
            account: "alice".into(),
        },
    );
    assert!(matches!(token_reply(&store), Reply::Revoked(Err(_))));
    assert!(store.shutdown(ANSWER));
}

#[test]
fn changes_made_by_the_admin_commands_reach_the_loop_even_after_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let (store, snapshot, wakes) = store_in(dir.path(), |_| {});
    assert_eq!(snapshot.last_change, 0);
    let db = Connection::open(dir.path().join("chat.db")).unwrap();
    db.execute_batch(
        "INSERT INTO changes (at, kind, account) VALUES (1, 'op-add', 'alice');
         INSERT INTO changes (at, kind, account) VALUES (1, 'delete', 'bob');",
    )
    .unwrap();
    let deadline = Instant::now() + ANSWER;
    let mut seen = Vec::new();
    while seen.len() < 2 && Instant::now() < deadline {
        let _ = wakes.recv_timeout(Duration::from_millis(100));
        while let Some(change) = store.try_change() {
            seen.push(change);
        }
    }
    assert_eq!(
        seen,
        [
            ops::Change::OpAdded("alice".into()),
            ops::Change::Deleted("bob".into())
        ]
    );
    // Pruning keeps the newest row, so ids never start again below it.
    assert_eq!(
        moderation::prune_changes(&db, i64::MAX, 0).unwrap(),
        0,
        "not reported: kept"
    );
    assert_eq!(
        moderation::prune_changes(&db, i64::MAX, i64::MAX).unwrap(),
        1
    );
    assert_eq!(count(&db, "SELECT max(id) FROM changes"), 2);
    assert!(store.shutdown(ANSWER));
}

/// A login's reads are parsed and planned once per connection, whatever
/// values are bound: with the bundled SQLite's STAT4 a range on a bound
/// value (`room <> ?2`, `expires_at > ?2`) re-prepared the statement for
/// every new value.
#[test]
fn a_login_s_statements_are_planned_once() {
    let (_dir, _path, conn) = migrated();
    for i in 0..5 {
        super::messages::load(&conn, &format!("user{i}")).unwrap();
        super::moderation::check_token(&conn, &[i as u8; 32], 1_000 + i).unwrap();
    }
    for sql in [
        super::messages::ROOMS_OF,
        super::messages::OFFLINE_COUNT,
        super::moderation::CHECK_TOKEN,
    ] {
        let stmt = conn.prepare_cached(sql).unwrap();
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "{sql}"
        );
    }
}
