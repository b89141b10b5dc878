//! Micro-benchmarks of the per-message hot paths: framing a chunk of lines,
//! a session handling one chat message, and appending one broadcast line to
//! 1,000 output buffers.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use neochat::chat::hub::{Hub, HubConfig};
use neochat::outbox::Outbox;
use neochat::session::{Action, AuthOutcome, ConnId, Ctx, Session, SessionConfig};
use neochat::transport::lines::{InBuf, LineFrame, Lines};

/// Frames `bytes` into lines and hands them to the session, as the reactor
/// does with the transport's input.
fn feed(session: &mut Session, framing: &mut (InBuf, Lines), bytes: &[u8], ctx: &mut Ctx<'_>) {
    let (input, lines) = framing;
    input.push(bytes);
    while session.wants_input() {
        match lines.next(input, ctx.config.max_line) {
            Some(LineFrame::Line(line)) => session.handle_line(line, ctx),
            Some(LineFrame::TooLong) => session.handle_too_long(ctx),
            Some(LineFrame::End) | None => break,
        }
    }
}

/// A session that has registered and is chatting, with flood control off.
fn chatting(config: &SessionConfig, hub: &mut Hub) -> Session {
    let mut actions = Vec::new();
    let now = Instant::now();
    let id = ConnId { key: 0, serial: 0 };
    let mut ctx = Ctx {
        now,
        wall: 0,
        config,
        hub,
        actions: &mut actions,
    };
    let mut s = Session::new(id, now, config);
    s.start(&mut ctx);
    let mut framing = (InBuf::default(), Lines::new());
    feed(
        &mut s,
        &mut framing,
        b"R\nalice\nsecret-password\n",
        &mut ctx,
    );
    s.handle_auth_result(AuthOutcome::Registered("alice".into()), &mut ctx);
    assert!(s.is_chatting());
    s
}

fn framing(c: &mut Criterion) {
    let config = SessionConfig {
        max_line: 4096,
        rate: None,
        rate_bytes: None,
    };
    let mut hub = Hub::new(HubConfig::default());
    let mut session = chatting(&config, &mut hub);
    let line = format!("{}\n", "x".repeat(63));
    let chunk = line.repeat(100);
    let mut actions = Vec::with_capacity(128);
    let mut framing = (InBuf::default(), Lines::new());
    let mut g = c.benchmark_group("session");
    g.throughput(Throughput::Elements(100));
    g.bench_function("frame and handle/100 lines of 64 bytes in one chunk", |b| {
        b.iter(|| {
            let mut ctx = Ctx {
                now: Instant::now(),
                wall: 0,
                config: &config,
                hub: &mut hub,
                actions: &mut actions,
            };
            feed(
                &mut session,
                &mut framing,
                black_box(chunk.as_bytes()),
                &mut ctx,
            );
            actions.clear();
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("frame and handle/one message", |b| {
        b.iter(|| {
            let mut ctx = Ctx {
                now: Instant::now(),
                wall: 0,
                config: &config,
                hub: &mut hub,
                actions: &mut actions,
            };
            feed(
                &mut session,
                &mut framing,
                black_box(line.as_bytes()),
                &mut ctx,
            );
            assert!(matches!(actions.first(), Some(Action::ToRoom { .. })));
            actions.clear();
        })
    });
    let split = chunk.as_bytes().split_at(chunk.len() / 2 + 7);
    g.throughput(Throughput::Elements(100));
    g.bench_function("frame and handle/100 lines split mid-line", |b| {
        b.iter(|| {
            let mut ctx = Ctx {
                now: Instant::now(),
                wall: 0,
                config: &config,
                hub: &mut hub,
                actions: &mut actions,
            };
            feed(&mut session, &mut framing, black_box(split.0), &mut ctx);
            feed(&mut session, &mut framing, black_box(split.1), &mut ctx);
            actions.clear();
        })
    });
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let line = format!("alice: {}\n", "x".repeat(64));
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("append one line to 1000 output buffers", |b| {
        b.iter_batched_ref(
            || (0..1000).map(|_| Outbox::default()).collect::<Vec<_>>(),
            |boxes| {
                for out in boxes.iter_mut() {
                    black_box(out.push(line.as_bytes(), 1 << 20));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("append 64 lines to 1000 buffers and write them out", |b| {
        let mut boxes: Vec<Outbox> = (0..1000).map(|_| Outbox::default()).collect();
        let mut sink = std::io::sink();
        b.iter(|| {
            for _ in 0..64 {
                for out in boxes.iter_mut() {
                    out.push(line.as_bytes(), 1 << 20);
                }
            }
            for out in boxes.iter_mut() {
                black_box(out.write_to(&mut sink).ok());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, framing, fanout);
criterion_main!(benches);
