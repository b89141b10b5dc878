//! `neochat-bench`: load scenarios against a NeoChat (or Redis) server.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use neochat::loadgen::{self, Common, FanoutOpts, FilesOpts, IdleOpts, LoginOpts, Target, WebOpts};

/// Load generator for NeoChat, in the spirit of redis-benchmark.
///
/// Runs one scenario against a server and prints a table (or JSON). For
/// NeoChat targets the server should run with `--rate off` (the generator
/// sends far more than 10 lines/s per sender) and, unless you are measuring
/// logins, a low `--bcrypt-cost` so that creating the accounts is quick. The
/// generator creates the accounts it needs (names start with --prefix) and
/// logs in to existing ones on later runs. Any error (a connection closed by
/// the server, an unexpected line, a rate the target cannot sustain) ends
/// the run with a message and exit status 1. For Redis targets
/// (`redis://127.0.0.1:6379`) it uses SUBSCRIBE and PUBLISH on one channel
/// named after --prefix.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Server to load: `neochat://HOST:PORT` (or just HOST:PORT) or `redis://HOST:PORT`
    #[arg(long, global = true, default_value = "neochat://127.0.0.1:59000")]
    target: Target,
    /// Speak TLS to the target (any certificate is accepted: this measures a
    /// server, it protects nobody)
    #[arg(long, global = true)]
    tls: bool,
    /// Print one JSON object instead of the table
    #[arg(long, global = true)]
    json: bool,
    /// Account-name prefix (NeoChat) or channel name (Redis)
    #[arg(long, global = true, default_value = "bench")]
    prefix: String,
    /// Password of the generator's accounts
    #[arg(long, global = true, default_value = "bench-password")]
    password: String,
    /// Seconds that setup (connecting, logging in) may take
    #[arg(long, global = true, default_value_t = 300)]
    setup_timeout: u64,
    /// NeoChat: receivers and senders `/join #NAME` after logging in and
    /// the senders' lines go there (fanout, latency; idle users join it
    /// too). Without it, everything happens in the lobby. Ignored for Redis
    #[arg(long, global = true, value_name = "NAME", value_parser = parse_room)]
    room: Option<String>,
    /// Run the chat pair (the two clients that measure chat latency in the
    /// logins, files and web scenarios) at normal priority. By default its
    /// two threads run real-time (SCHED_FIFO 1) where allowed: they stand
    /// for clients on other machines, and should not wait for a CPU behind
    /// the server and the generator they share this one with
    #[arg(long, global = true)]
    pair_normal: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// R receivers and S senders in one room; closed loop (at most --window
    /// messages in flight, i.e. not yet read by every receiver). Reports
    /// deliveries/s (messages read, summed over receivers) and delivery
    /// latency percentiles (sampled on --sampled receivers).
    Fanout(FanoutArgs),
    /// Like fanout, but an open loop at a fixed offered --rate; every
    /// receiver times every message. Reports latency percentiles.
    Latency(FanoutArgs),
    /// K logged-in (or subscribed) connections that say nothing. Reports the
    /// server's resident memory per connection (needs its --pid). Uses
    /// several 127.0.0.x source addresses past 20,000 connections.
    Idle(IdleArgs),
    /// N accounts log in at once, at the server's bcrypt cost (or with
    /// tokens: --token), while a chat pair exchanges messages. Reports
    /// logins/s and the pair's latency before and during the storm; with
    /// --no-pair, only the storm: the time until all N are in Chatting.
    /// NeoChat only.
    Logins(LoginArgs),
    /// One upload of --bytes and its download (`/upload`, PUT, GET), while
    /// a chat pair exchanges messages. Reports MB/s each way, the server's
    /// resident memory before and at its peak (with --pid), and the pair's
    /// latency before and during the transfer. Run the server with
    /// --max-file and --file-quota above --bytes. NeoChat only.
    Files(FilesArgs),
    /// N browsers open the web client at once, as on a first visit (`GET
    /// /`, then the page's versioned script and style, each on a new
    /// connection, then `/ws` until the login prompt), while a chat pair
    /// exchanges messages. Reports the time until all N had their prompt,
    /// each one's time to it, the server's resident memory (with --pid)
    /// and the pair's latency before and during the burst. Fails if any
    /// browser did. Use --tls for `https://`. NeoChat only.
    Web(WebArgs),
}

#[derive(ClapArgs, Debug)]
struct WebArgs {
    /// Browsers that start at once
    #[arg(short = 'n', long, default_value_t = 1000)]
    browsers: usize,
    /// Generator threads the browsers are spread over
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Messages per second of the chat pair
    #[arg(long, default_value_t = 500.0)]
    pair_rate: f64,
    /// Seconds the pair is measured before the browsers start
    #[arg(long, default_value_t = 3.0)]
    quiet: f64,
    /// Seconds a browser may take to reach its prompt and close
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Process id of the server, to report its resident memory
    #[arg(long)]
    pid: Option<u32>,
}

#[derive(ClapArgs, Debug)]
struct FilesArgs {
    /// Size of the file (a K, M or G suffix counts in 1024s)
    #[arg(long, default_value = "1G", value_parser = neochat::config::parse_bytes)]
    bytes: u64,
    /// Messages per second of the chat pair
    #[arg(long, default_value_t = 500.0)]
    pair_rate: f64,
    /// Seconds the pair is measured before the transfer
    #[arg(long, default_value_t = 3.0)]
    quiet: f64,
    /// Process id of the server, to report its resident memory
    #[arg(long)]
    pid: Option<u32>,
}

#[derive(ClapArgs, Debug)]
struct FanoutArgs {
    /// Receivers
    #[arg(short = 'r', long, default_value_t = 1000)]
    receivers: usize,
    /// Senders
    #[arg(short = 's', long, default_value_t = 1)]
    senders: usize,
    /// Payload bytes per message (at least 34)
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// fanout: messages in flight at most
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// latency: messages per second offered, all senders together
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Seconds of warm-up before measuring
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds of measurement
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// fanout: receivers that time every message (the others only count)
    #[arg(long, default_value_t = 32)]
    sampled: usize,
    /// Process id of the server, to report its CPU time per delivery
    #[arg(long)]
    pid: Option<u32>,
}

#[derive(ClapArgs, Debug)]
struct IdleArgs {
    /// Connections to hold
    #[arg(short = 'k', long, default_value_t = 10_000)]
    connections: usize,
    /// Process id of the server, to read its resident memory from /proc
    #[arg(long)]
    pid: u32,
    /// Seconds to hold the connections before measuring
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// NeoChat: messages posted to the lobby before the idle users log in
    /// (after the first memory reading), e.g. 256 to fill its history ring
    #[arg(long, default_value_t = 0)]
    fill: usize,
    /// Payload bytes of each --fill message (at least 34)
    #[arg(long, default_value_t = 64)]
    fill_size: usize,
}

#[derive(ClapArgs, Debug)]
struct LoginArgs {
    /// Parallel logins in the storm
    #[arg(short = 'n', long, default_value_t = 200)]
    logins: usize,
    /// Messages per second of the chat pair
    #[arg(long, default_value_t = 500.0)]
    pair_rate: f64,
    /// Seconds the pair is measured before the storm
    #[arg(long, default_value_t = 3.0)]
    quiet: f64,
    /// No chat pair: open all N connections and send their logins at once,
    /// and report the time until the last is in Chatting (and the server's
    /// CPU with --pid). Run the server with --max-auth-queue and
    /// --max-clients above N, and a --login-timeout long enough
    #[arg(long)]
    no_pair: bool,
    /// Process id of the server, to report its CPU time during the storm
    /// (with --no-pair)
    #[arg(long)]
    pid: Option<u32>,
    /// Log the storm in with tokens (`T`) instead of passwords. Setup (not
    /// timed) logs each account in once with its password, 128 at a time,
    /// and asks it for a token (`/token`); that takes N bcrypt checks at the
    /// server's cost, so run the server at a low --bcrypt-cost (a token
    /// login never runs bcrypt) and give it --max-clients above N + 2
    #[arg(long)]
    token: bool,
}

fn parse_room(s: &str) -> Result<String, String> {
    let name = s.strip_prefix('#').unwrap_or(s).to_ascii_lowercase();
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b));
    if ok && name != "lobby" {
        Ok(name)
    } else {
        Err("a room is 1 to 32 of a-z 0-9 _ - . (not `lobby`)".into())
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = neochat::reactor::raise_fd_limit() {
        eprintln!("neochat-bench: cannot raise the open-file limit: {e}");
    }
    let mut common = Common::new(args.target);
    common.tls = args.tls;
    common.prefix = args.prefix.clone();
    common.password = args.password.clone();
    common.setup_timeout = Duration::from_secs(args.setup_timeout);
    common.room = args.room.clone();
    common.pair_realtime = !args.pair_normal;
    match run(&args, &common) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("neochat-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, common: &Common) -> Result<(), loadgen::Error> {
    match &args.scenario {
        Scenario::Fanout(f) | Scenario::Latency(f) => {
            let latency = matches!(args.scenario, Scenario::Latency(_));
            let opts = FanoutOpts {
                receivers: f.receivers,
                senders: f.senders,
                size: f.size,
                window: f.window,
                rate: latency.then_some(f.rate),
                warmup: secs(f.warmup),
                duration: secs(f.duration),
                sampled: f.sampled,
                pid: f.pid,
            };
            let r = loadgen::fanout(common, &opts)?;
            let name = if latency { "latency" } else { "fanout" };
            if args.json {
                println!("{}", r.json(name));
            } else {
                println!("scenario        {name}");
                println!("target          {}", r.target);
                println!("receivers       {}", r.receivers);
                println!("senders         {}", r.senders);
                println!("message bytes   {}", r.size);
                if latency {
                    println!("offered rate    {} messages/s", f.rate);
                } else {
                    println!("window          {} messages in flight", f.window);
                }
                println!("measured        {:.2} s", r.seconds);
                println!("messages        {}", r.messages);
                println!("deliveries      {}", r.deliveries);
                println!("deliveries/s    {:.0}", r.deliveries_per_sec);
                if let Some(cpu) = r.server_cpu_secs {
                    println!(
                        "server CPU      {:.2} s, {:.0} ns per delivery",
                        cpu,
                        cpu * 1e9 / r.deliveries.max(1) as f64
                    );
                }
                if let Some(cpu) = r.server_cpu_drained_secs {
                    println!(
                        "  until quiet   {:.2} s, {:.0} ns per delivery (what the server did \
                         for the run after it, storing included)",
                        cpu,
                        cpu * 1e9 / r.deliveries.max(1) as f64
                    );
                }
                print_latency("latency", &r.latency);
            }
        }
        Scenario::Idle(i) => {
            let r = loadgen::idle(
                common,
                &IdleOpts {
                    connections: i.connections,
                    pid: i.pid,
                    settle: secs(i.settle),
                    fill: i.fill,
                    fill_size: i.fill_size.max(34),
                },
            )?;
            if args.json {
                println!("{}", r.json());
            } else {
                println!("scenario        idle");
                println!("target          {}", r.target);
                println!("connections     {}", r.connections);
                println!("setup           {:.1} s", r.setup_seconds);
                println!(
                    "server RSS      {} KiB before, {} KiB after",
                    r.rss_before_kib, r.rss_after_kib
                );
                println!("per connection  {:.0} bytes", r.bytes_per_connection);
                println!(
                    "100,000 would   {:.0} MB",
                    r.bytes_per_connection * 100_000.0 / 1e6
                );
            }
        }
        Scenario::Logins(l) => {
            let r = loadgen::logins(
                common,
                &LoginOpts {
                    logins: l.logins,
                    pair_rate: l.pair_rate,
                    quiet: secs(l.quiet),
                    no_pair: l.no_pair,
                    pid: l.pid,
                    token: l.token,
                },
            )?;
            if args.json {
                println!("{}", r.json());
            } else {
                println!("scenario        logins");
                println!("target          {}", r.target);
                println!(
                    "logins          {} ({})",
                    r.logins,
                    if r.token { "tokens" } else { "passwords" }
                );
                println!(
                    "storm           {:.2} s, {:.1} logins/s",
                    r.storm_seconds, r.logins_per_sec
                );
                if l.no_pair {
                    if let Some(cpu) = r.server_cpu_secs {
                        println!("server CPU      {cpu:.2} s");
                    }
                    println!("bytes read      {}", r.bytes_read);
                } else {
                    print_latency("pair, quiet", &r.quiet);
                    print_latency("pair, storm", &r.storm);
                }
                if r.quiet.p99_us > 0.0 {
                    println!("p99 ratio       {:.2}x", r.storm.p99_us / r.quiet.p99_us);
                }
            }
        }
        Scenario::Files(f) => {
            let r = loadgen::files(
                common,
                &FilesOpts {
                    size: f.bytes,
                    pair_rate: f.pair_rate,
                    quiet: secs(f.quiet),
                    pid: f.pid,
                },
            )?;
            if args.json {
                println!("{}", r.json());
            } else {
                println!("scenario        files");
                println!("target          {}", r.target);
                println!("file            {} bytes", r.size);
                println!(
                    "upload          {:.2} s, {:.0} MB/s",
                    r.upload_secs,
                    r.upload_mb_per_sec()
                );
                println!(
                    "download        {:.2} s, {:.0} MB/s",
                    r.download_secs,
                    r.download_mb_per_sec()
                );
                if let (Some(before), Some(peak)) = (r.rss_before_kib, r.rss_peak_kib) {
                    println!(
                        "server RSS      {before} KiB before, {peak} KiB at most (+{} KiB)",
                        peak.saturating_sub(before)
                    );
                }
                print_latency("pair, quiet", &r.quiet);
                print_latency("pair, transfer", &r.during);
                print_latency("pair, upload", &r.upload);
                print_latency("pair, download", &r.download);
                if r.quiet.p99_us > 0.0 {
                    println!("p99 ratio       {:.2}x", r.during.p99_us / r.quiet.p99_us);
                }
            }
        }
        Scenario::Web(w) => {
            let r = loadgen::web(
                common,
                &WebOpts {
                    browsers: w.browsers,
                    threads: w.threads,
                    pair_rate: w.pair_rate,
                    quiet: secs(w.quiet),
                    timeout: secs(w.timeout),
                    pid: w.pid,
                },
            )?;
            if args.json {
                println!("{}", r.json());
            } else {
                println!("scenario        web");
                println!("target          {}", r.target);
                println!(
                    "browsers        {} ({}), {} failed",
                    r.browsers,
                    if r.tls { "https" } else { "http" },
                    r.errors
                );
                println!(
                    "all prompted    {:.2} s (all done {:.2} s)",
                    r.all_prompted_secs, r.burst_secs
                );
                println!(
                    "time to prompt  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    r.prompt.p50_us / 1e3,
                    r.prompt.p99_us / 1e3,
                    r.prompt.max_us / 1e3
                );
                println!("bytes/browser   {}", r.bytes_per_browser);
                if let (Some(before), Some(peak)) = (r.rss_before_kib, r.rss_peak_kib) {
                    println!(
                        "server RSS      {before} KiB before, {peak} KiB at most (+{} KiB)",
                        peak.saturating_sub(before)
                    );
                }
                print_latency("pair, quiet", &r.quiet);
                print_latency("pair, browsers", &r.during);
                if r.quiet.p99_us > 0.0 {
                    println!("p99 ratio       {:.2}x", r.ratio());
                }
            }
            r.check()?;
        }
    }
    Ok(())
}

fn print_latency(label: &str, p: &loadgen::Percentiles) {
    println!(
        "{label:<15} p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us ({} samples)",
        p.p50_us, p.p99_us, p.p999_us, p.max_us, p.samples
    );
}
