//! Policy hot reload on a real temporary directory: edits, invalid edits,
//! deletions, a ConfigMap-style `..data` symlink swap, and the periodic
//! rescan without filesystem events.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use canaryd::daemon::reload::{PolicySet, PolicyStore, ReloadOptions};
use canaryd::daemon::server::ServerState;
use canaryd::daemon::telemetry::Metrics;
use canaryd::policy::Strategy;
use tokio::sync::{oneshot, watch};

/// Longest a change may take to be published.
const WAIT: Duration = Duration::from_secs(10);
/// Rescan interval for the test without filesystem events.
const FAST_RESCAN: Duration = Duration::from_millis(200);

fn policy_yaml(service: &str, observe: &str) -> String {
    format!(
        "service: {service}
namespace: default
deployment: {service}
strategy:
  canary:
    steps:
      - size: 1
        observe: {observe}
analysis:
  prometheus:
    url: http://prometheus:9090
alerts:
  matchers: ['service=\"{service}\"']
"
    )
}

/// A policy with an unknown field (line 3) and a bad duration (line 8).
fn broken_yaml(service: &str) -> String {
    policy_yaml(service, "soon").replace("deployment:", "colour: blue\ndeployment:")
}

fn observe(set: &PolicySet, service: &str) -> Option<Duration> {
    set.iter()
        .find(|p| p.service == service)
        .map(|p| match &p.strategy {
            Strategy::Canary(c) => c.steps[0].observe,
            Strategy::BlueGreen(b) => b.observe,
        })
}

async fn wait_until(
    rx: &mut watch::Receiver<Arc<PolicySet>>,
    what: &str,
    pred: impl FnMut(&Arc<PolicySet>) -> bool,
) -> Arc<PolicySet> {
    let outcome = tokio::time::timeout(WAIT, rx.wait_for(pred))
        .await
        .map(|r| r.map(|set| set.clone()));
    match outcome {
        Ok(Ok(set)) => set,
        Ok(Err(_)) => panic!("policy store dropped while waiting for {what}"),
        Err(_) => panic!(
            "no policy update within {WAIT:?}: {what}; now {:?}",
            *rx.borrow()
        ),
    }
}

/// Runs the store's watch loop until the returned sender is dropped.
fn start(store: &Arc<PolicyStore>) -> oneshot::Sender<()> {
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(store.clone().run(async {
        let _ = rx.await;
    }));
    tx
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

#[tokio::test]
async fn edits_apply_invalid_edits_keep_the_previous_version_and_deletions_remove() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yaml");
    write(&a, &policy_yaml("a", "1m"));
    write(&b, &policy_yaml("b", "1m"));
    let server = Arc::new(ServerState::new(Metrics::new().unwrap(), None));
    let store = Arc::new(PolicyStore::open(dir.path()).attach(server.clone()));
    assert_eq!(store.current().len(), 2);
    assert!(store.errors().is_empty());
    assert!(server
        .readiness
        .policies_loaded
        .load(std::sync::atomic::Ordering::Relaxed));
    let mut policies = store.subscribe();
    let mut errors = store.subscribe_errors();
    let _stop = start(&store);

    // A valid edit takes effect without a restart.
    write(&a, &policy_yaml("a", "5m"));
    let set = wait_until(&mut policies, "a.yaml edited to 5m", |s| {
        observe(s, "a") == Some(Duration::from_secs(300))
    })
    .await;
    assert_eq!(set.len(), 2);

    // An invalid edit of a.yaml is rejected: 5m stays in force, the errors
    // are published, and b.yaml's edit still applies.
    write(&a, &broken_yaml("a"));
    write(&b, &policy_yaml("b", "2m"));
    let set = wait_until(&mut policies, "b.yaml edited to 2m", |s| {
        observe(s, "b") == Some(Duration::from_secs(120))
    })
    .await;
    assert_eq!(observe(&set, "a"), Some(Duration::from_secs(300)));
    let published = tokio::time::timeout(WAIT, errors.wait_for(|e| !e.is_empty()))
        .await
        .expect("errors published")
        .expect("store alive")
        .clone();
    let a_display = a.display().to_string();
    assert!(
        published
            .iter()
            .any(|e| e.starts_with(&format!("{a_display}:3:1: colour: unknown field"))),
        "{published:?}"
    );
    assert!(
        published.iter().all(|e| e.starts_with(&a_display)),
        "{published:?}"
    );
    assert_eq!(
        server.status.read().unwrap().policy_errors,
        *published,
        "the status board shows the same errors"
    );

    // Fixing the file applies it and clears the errors.
    write(&a, &policy_yaml("a", "3m"));
    wait_until(&mut policies, "a.yaml fixed to 3m", |s| {
        observe(s, "a") == Some(Duration::from_secs(180))
    })
    .await;
    tokio::time::timeout(WAIT, errors.wait_for(|e| e.is_empty()))
        .await
        .expect("errors cleared")
        .expect("store alive");
    assert!(server.status.read().unwrap().policy_errors.is_empty());

    // A new file is added, a deleted one removed.
    write(&dir.path().join("c.yml"), &policy_yaml("c", "1m"));
    wait_until(&mut policies, "c.yml added", |s| s.len() == 3).await;
    std::fs::remove_file(&b).unwrap();
    let set = wait_until(&mut policies, "b.yaml removed", |s| {
        observe(s, "b").is_none()
    })
    .await;
    assert_eq!(set.len(), 2);
    assert!(set.get("default", "c").is_some());
}

/// Lays out a ConfigMap volume the way the kubelet does: the data in a
/// timestamped directory, `..data` pointing at it, one link per key.
struct ConfigMapVolume {
    root: tempfile::TempDir,
    generation: u32,
    keys: Vec<String>,
}

impl ConfigMapVolume {
    fn new(files: &[(&str, String)]) -> Self {
        let mut volume = ConfigMapVolume {
            root: tempfile::tempdir().unwrap(),
            generation: 0,
            keys: Vec::new(),
        };
        volume.update(files);
        volume
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    /// The kubelet's atomic update: write a new data directory, swap `..data`
    /// with one rename, link new keys, unlink removed keys, drop the old data.
    fn update(&mut self, files: &[(&str, String)]) {
        use std::os::unix::fs::symlink;
        let root = self.root.path();
        let old = format!(
            "..2026_11_27_10_00_{:02}.{}",
            self.generation,
            1000 + self.generation
        );
        self.generation += 1;
        let new = format!(
            "..2026_11_27_10_00_{:02}.{}",
            self.generation,
            1000 + self.generation
        );
        std::fs::create_dir(root.join(&new)).unwrap();
        for (name, text) in files {
            write(&root.join(&new).join(name), text);
        }
        symlink(&new, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        let keys: Vec<String> = files.iter().map(|(n, _)| n.to_string()).collect();
        for key in keys.iter().filter(|k| !self.keys.contains(k)) {
            symlink(format!("..data/{key}"), root.join(key)).unwrap();
        }
        for key in self.keys.iter().filter(|k| !keys.contains(k)) {
            std::fs::remove_file(root.join(key)).unwrap();
        }
        if self.generation > 1 {
            std::fs::remove_dir_all(root.join(old)).unwrap();
        }
        self.keys = keys;
    }
}

#[tokio::test]
async fn a_configmap_data_swap_is_picked_up() {
    let mut volume = ConfigMapVolume::new(&[
        ("a.yaml", policy_yaml("a", "1m")),
        ("b.yaml", policy_yaml("b", "1m")),
    ]);
    let store = Arc::new(PolicyStore::open(volume.path()));
    assert_eq!(store.current().len(), 2, "{:?}", store.errors());
    // Policies are named by the link in the volume, not by the data directory.
    let source = store.current().get("default", "a").unwrap().source.clone();
    assert_eq!(source, volume.path().join("a.yaml"));
    let mut policies = store.subscribe();
    let _stop = start(&store);

    // Update a, break b, add c: one swap.
    volume.update(&[
        ("a.yaml", policy_yaml("a", "4m")),
        ("b.yaml", broken_yaml("b")),
        ("c.yaml", policy_yaml("c", "1m")),
    ]);
    let set = wait_until(&mut policies, "swap 1 applied", |s| {
        observe(s, "a") == Some(Duration::from_secs(240)) && s.len() == 3
    })
    .await;
    assert_eq!(
        observe(&set, "b"),
        Some(Duration::from_secs(60)),
        "b keeps its previous version"
    );
    assert!(store.errors().iter().all(|e| e.contains("b.yaml")));
    assert!(!store.errors().is_empty());

    // Remove b from the ConfigMap: its policy goes.
    volume.update(&[
        ("a.yaml", policy_yaml("a", "4m")),
        ("c.yaml", policy_yaml("c", "2m")),
    ]);
    let set = wait_until(&mut policies, "swap 2 applied", |s| {
        observe(s, "b").is_none() && observe(s, "c") == Some(Duration::from_secs(120))
    })
    .await;
    assert_eq!(set.len(), 2);
    tokio::time::timeout(WAIT, store.subscribe_errors().wait_for(|e| e.is_empty()))
        .await
        .expect("b's errors cleared with the file")
        .expect("store alive");
}

#[tokio::test]
async fn the_periodic_rescan_applies_changes_without_events() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    write(&a, &policy_yaml("a", "1m"));
    let options = ReloadOptions {
        rescan_interval: FAST_RESCAN,
        watch_events: false,
        ..ReloadOptions::default()
    };
    let store = Arc::new(PolicyStore::with_options(dir.path(), options));
    let mut policies = store.subscribe();
    let _stop = start(&store);
    write(&a, &policy_yaml("a", "9m"));
    wait_until(&mut policies, "rescan picked up 9m", |s| {
        observe(s, "a") == Some(Duration::from_secs(540))
    })
    .await;
}

#[tokio::test]
async fn a_missing_directory_loads_nothing_and_keeps_what_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("policies");
    let store = PolicyStore::open(&missing);
    assert!(store.current().is_empty());
    assert_eq!(store.errors().len(), 1);
    assert!(
        store.errors()[0].contains("cannot read policy path"),
        "{:?}",
        store.errors()
    );

    std::fs::create_dir(&missing).unwrap();
    write(&missing.join("a.yaml"), &policy_yaml("a", "1m"));
    store.reload();
    assert_eq!(store.current().len(), 1);
    assert!(store.errors().is_empty());

    // The directory disappears (an unmounted volume): the policy stays.
    std::fs::remove_dir_all(&missing).unwrap();
    let merged = store.reload();
    assert_eq!(merged.set.len(), 1);
    assert_eq!(store.current().len(), 1);
    assert_eq!(store.errors().len(), 1);
}

#[tokio::test]
async fn a_single_policy_file_is_watched_too() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    write(&a, &policy_yaml("a", "1m"));
    // Another file beside it is not part of the store.
    write(&dir.path().join("other.yaml"), &policy_yaml("other", "1m"));
    let store = Arc::new(PolicyStore::open(&a));
    assert_eq!(store.current().len(), 1);
    let mut policies = store.subscribe();
    let _stop = start(&store);
    write(&a, &policy_yaml("a", "6m"));
    let set = wait_until(&mut policies, "a.yaml edited to 6m", |s| {
        observe(s, "a") == Some(Duration::from_secs(360))
    })
    .await;
    assert_eq!(set.len(), 1);
}

/// Policies in the scale test, as in issue 16.
const MANY: usize = 1_000;
/// How long an idle directory is watched for rescans.
const IDLE: Duration = Duration::from_secs(3);

/// `count` policies like policies/myapp.yaml, each with its own service and
/// Deployment; returns the paths.
fn write_many(dir: &Path, count: usize) -> Vec<std::path::PathBuf> {
    let template = include_str!("../../policies/myapp.yaml");
    (0..count)
        .map(|i| {
            let file = dir.join(format!("svc-{i:04}.yaml"));
            write(&file, &template.replace("myapp", &format!("svc-{i:04}")));
            file
        })
        .collect()
}

/// Starts the watch loop and waits for its first rescan (the one that covers
/// changes made while the watch was being set up).
async fn start_and_settle(store: &Arc<PolicyStore>) -> oneshot::Sender<()> {
    let mut stats = store.subscribe_stats();
    let stop = start(store);
    tokio::time::timeout(WAIT, stats.wait_for(|s| s.scans >= 2))
        .await
        .expect("the watch loop's first rescan")
        .expect("store alive");
    stop
}

#[tokio::test]
async fn an_idle_directory_is_not_rescanned() {
    let dir = tempfile::tempdir().unwrap();
    write_many(dir.path(), 20);
    let store = Arc::new(PolicyStore::open(dir.path()));
    assert_eq!(store.current().len(), 20, "{:?}", store.errors());
    let _stop = start_and_settle(&store).await;
    let settled = store.stats();
    // Reading the files must not wake a rescan (it did, in a loop: issue 16).
    tokio::time::sleep(IDLE).await;
    assert_eq!(store.stats(), settled);
    assert_eq!(settled.scans, 2);
    assert_eq!(settled.files_parsed, 20);
}

#[tokio::test]
async fn an_edit_among_a_thousand_policies_parses_only_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_many(dir.path(), MANY);
    let store = Arc::new(PolicyStore::open(dir.path()));
    assert_eq!(store.current().len(), MANY, "{:?}", store.errors());
    assert_eq!(store.stats().files_parsed, MANY as u64);
    let before = store.current();
    let mut policies = store.subscribe();
    let _stop = start_and_settle(&store).await;
    assert_eq!(store.stats().files_parsed, MANY as u64, "nothing changed");

    let edited = &files[MANY / 2];
    let text = std::fs::read_to_string(edited).unwrap();
    write(edited, &text.replace("observe: 10m", "observe: 11m"));
    let service = format!("svc-{:04}", MANY / 2);
    let after = wait_until(&mut policies, "one policy edited", |s| {
        observe(s, &service) == Some(Duration::from_secs(660))
    })
    .await;
    assert_eq!(store.stats().files_parsed, MANY as u64 + 1);
    assert_eq!(after.len(), MANY);
    // Every other policy is the very same Arc.
    let kept = files
        .iter()
        .filter(|f| *f != edited)
        .filter(|f| Arc::ptr_eq(before.in_file(f).unwrap(), after.in_file(f).unwrap()))
        .count();
    assert_eq!(kept, MANY - 1);
}
