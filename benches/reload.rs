//! Policy reload benchmark: 1,000 policies like policies/myapp.yaml loaded,
//! then one file edited at a time.
//!
//! `cargo bench --bench reload` (release). Reports, over `BENCH_EDITS` edits
//! (default 50): the time of [`PolicyStore::reload`] after one edit, the time
//! from the write to the new set being published by the watch loop (which
//! includes the store's `SETTLE_DELAY` debounce), the time of a rescan with
//! nothing changed, and for comparison a full `scan` + `merge` of every file,
//! which is what each wake-up cost before issue 16. Then, with the watch loop
//! idle for `IDLE`, the rescans it made and the process's CPU time (Linux
//! `/proc/self/stat`, assuming 100 clock ticks per second).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use canaryd::daemon::reload::{merge, scan, PolicySet, PolicyStore, SETTLE_DELAY};

const POLICIES: usize = 1_000;
const DEFAULT_EDITS: usize = 50;
/// Longest an edit may take to be published before the run is abandoned.
const WAIT: Duration = Duration::from_secs(10);
/// Old enough for the store to trust a file's stamp.
const AGED: Duration = Duration::from_secs(3600);
/// How long the watch loop is left idle.
const IDLE: Duration = Duration::from_secs(10);
/// `USER_HZ` of `/proc/self/stat` on Linux.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

fn main() {
    let edits = std::env::var("BENCH_EDITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_EDITS);
    let dir = tempfile::tempdir().expect("temporary directory");
    let files = write_policies(dir.path());

    let started = Instant::now();
    let store = Arc::new(PolicyStore::open(dir.path()));
    let load = started.elapsed();
    assert_eq!(store.current().len(), POLICIES, "{:?}", store.errors());
    // One rescan records the aged stamps as settled.
    store.reload();

    let idle = timed(edits, || {
        store.reload();
    });
    let full = timed(edits.min(10), || {
        merge(&PolicySet::default(), scan(dir.path()));
    });
    let parsed_before = store.stats().files_parsed;
    let reload = timed(edits, || {
        edit(&files[POLICIES / 2]);
        store.reload();
    });
    let parsed = store.stats().files_parsed - parsed_before;
    let (published, idle_loop) = watch_loop(&store, &files, edits);

    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("Policy reload, {POLICIES} policies, {edits} edits ({build} build)");
    println!(
        "first load (parse + validate all)        {:>9.1} ms",
        ms(load)
    );
    println!(
        "full scan + merge (before issue 16)      {}",
        summary(&full)
    );
    println!(
        "rescan, nothing changed                  {}",
        summary(&idle)
    );
    println!(
        "reload() after one edit                  {}",
        summary(&reload)
    );
    println!(
        "edit -> published by the watch loop      {}  (includes the {} ms debounce)",
        summary(&published),
        SETTLE_DELAY.as_millis()
    );
    println!("files parsed by {edits} edit reloads: {parsed}");
    println!(
        "watch loop idle {} s: {} rescans, {:.1}% of one core",
        IDLE.as_secs(),
        idle_loop.rescans,
        idle_loop.cpu_share * 100.0
    );
}

/// What the watch loop did while nothing changed.
struct Idle {
    rescans: u64,
    cpu_share: f64,
}

/// This process's CPU time (user + system) so far, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses: state is the
    // first, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / CLOCK_TICKS_PER_SEC
}

/// Writes the policies, aged so that their stamps are trusted.
fn write_policies(dir: &Path) -> Vec<PathBuf> {
    let template = include_str!("../policies/myapp.yaml");
    let aged = SystemTime::now() - AGED;
    (0..POLICIES)
        .map(|i| {
            let file = dir.join(format!("svc-{i:04}.yaml"));
            let text = template.replace("myapp", &format!("svc-{i:04}"));
            std::fs::write(&file, text).expect("write policy");
            let f = std::fs::File::options()
                .write(true)
                .open(&file)
                .expect("open");
            f.set_modified(aged).expect("set mtime");
            file
        })
        .collect()
}

/// Flips the first step's observe time between 10m and 11m.
fn edit(file: &Path) {
    let text = std::fs::read_to_string(file).expect("read policy");
    let flipped = if text.contains("observe: 10m") {
        text.replace("observe: 10m", "observe: 11m")
    } else {
        text.replace("observe: 11m", "observe: 10m")
    };
    std::fs::write(file, flipped).expect("write policy");
}

/// Edit → new set published, through the filesystem watch; then the loop
/// left idle.
fn watch_loop(store: &Arc<PolicyStore>, files: &[PathBuf], edits: usize) -> (Vec<Duration>, Idle) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut stats = store.subscribe_stats();
        tokio::spawn(store.clone().run(async {
            let _ = stopped.await;
        }));
        let first = store.stats().scans + 1;
        let _ = stats.wait_for(|s| s.scans >= first).await;
        let mut policies = store.subscribe();
        let mut times = Vec::with_capacity(edits);
        for i in 0..edits {
            policies.mark_unchanged();
            let started = Instant::now();
            edit(&files[i % POLICIES]);
            tokio::time::timeout(WAIT, policies.changed())
                .await
                .expect("edit published")
                .expect("store alive");
            times.push(started.elapsed());
        }
        // Whatever the last edit still triggers is not counted as idle.
        tokio::time::sleep(SETTLE_DELAY).await;
        let (scans, cpu) = (store.stats().scans, cpu_seconds());
        tokio::time::sleep(IDLE).await;
        let idle = Idle {
            rescans: store.stats().scans - scans,
            cpu_share: (cpu_seconds() - cpu) / IDLE.as_secs_f64(),
        };
        let _ = stop.send(());
        (times, idle)
    })
}

fn timed(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median, p90 and max in milliseconds.
fn summary(times: &[Duration]) -> String {
    let mut sorted = times.to_vec();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    format!(
        "median {:>7.2} ms  p90 {:>7.2} ms  max {:>7.2} ms",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(1.0))
    )
}
