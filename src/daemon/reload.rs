//! Policy hot reload: a [`PolicyStore`] holds the policies in force and
//! re-reads the policy directory whenever it changes.
//!
//! In production the directory is a mounted ConfigMap: the kubelet writes a
//! new timestamped directory and swaps the `..data` symlink atomically, so the
//! store watches the directory itself (not single files) and rescans it when a
//! policy file or the `..data` link changes, with a periodic rescan as a
//! backstop for missed events. Access events are ignored: a rescan opens every
//! file, so waking on them made each rescan cause the next (issue 16).
//!
//! A rescan reads only files whose stamp (mtime, size, inode) changed, and
//! parses only those whose content hash changed; an unchanged file keeps its
//! validated policy, the same [`Arc`].
//!
//! The rules live in the pure [`merge`]: a valid file replaces its policy; an
//! invalid file is rejected with its errors while the previous valid version of
//! *that* file stays in force; a deleted file removes its policy; two files for
//! one Deployment keep the one already in force. [`scan`] and the store's file
//! cache are the only parts that read files, and [`PolicyStore::run`] the only
//! part that watches.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use serde_saphyr::Location;
use tokio::sync::{mpsc, watch};

use crate::daemon::server::ServerState;
use crate::hash::fnv1a64;
use crate::policy::{
    is_policy_file_name, load_validated, parse_validated_bytes, read_policy_bytes, Claims, Policy,
    PolicyError, PolicyErrors, Validated,
};
pub use crate::policy::{PolicySet, Target};

/// Full rescan interval: the backstop when a filesystem event is missed (or
/// the watch could not be set up, e.g. inotify limits are exhausted).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(30);
/// Wait after the first event before rescanning, so that one edit (editors
/// write, rename and chmod; the kubelet swaps several links) is one reload.
pub const SETTLE_DELAY: Duration = Duration::from_millis(200);
/// A file's stamp (mtime, size, inode) vouches for its content only once its
/// mtime is this old when read: a second edit within the filesystem's
/// timestamp granularity can keep all three, so younger files are re-read and
/// hashed on every scan.
pub const STAMP_SETTLE: Duration = Duration::from_secs(2);
/// The link the kubelet swaps to update a mounted ConfigMap.
const CONFIGMAP_DATA_LINK: &str = "..data";

/// What one read of the policy path found, file by file.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Every policy file found, with its load result.
    pub files: BTreeMap<PathBuf, Result<Validated, PolicyErrors>>,
    /// Set when the path itself could not be read. Nothing is removed then:
    /// an unreadable mount must not look like "every policy deleted".
    pub unreadable: Option<PolicyError>,
}

/// What a reload did to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileChange {
    /// A new valid file: its policy is now in force.
    Added,
    /// A valid new version replaced the previous one.
    Updated,
    /// The file is gone (or reverted to nothing); its policy is no longer in force.
    Removed,
    /// The file is invalid or conflicts; its previous valid version stays in force.
    Held,
    /// The file is invalid or conflicts and has no previous valid version.
    Rejected,
}

/// The result of merging a [`Scan`] into the policies in force.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    /// The policies in force from now on.
    pub set: PolicySet,
    /// Every problem found, sorted by file and position.
    pub errors: Vec<PolicyError>,
    /// Files whose standing changed, or that are held or rejected.
    pub changes: BTreeMap<PathBuf, FileChange>,
}

/// Merges the load results of one scan into the current set (pure).
///
/// - a valid file's policy is in force (added or updated);
/// - an invalid file keeps its previous valid version in force (`Held`), or
///   has none (`Rejected`); its errors are reported either way;
/// - a file absent from the scan is removed, unless the scan could not read
///   the path at all, in which case nothing changes;
/// - when two files manage one Deployment, the file already managing it wins,
///   else the first by name; the other falls back to its own previous version
///   when it has one.
pub fn merge(current: &PolicySet, scan: Scan) -> Merged {
    let files = scan
        .files
        .into_iter()
        .map(|(file, result)| (file, result.map(Valid::from)))
        .collect();
    merge_loaded(
        current,
        LoadedScan {
            files,
            unreadable: scan.unreadable,
        },
    )
}

/// A valid policy file as a merge needs it. The policy is shared so that a
/// file unchanged since the last scan keeps the very `Arc` in force.
#[derive(Debug, Clone)]
struct Valid {
    policy: Arc<Policy>,
    deployment_at: Location,
}

impl From<Validated> for Valid {
    fn from(v: Validated) -> Self {
        Valid {
            policy: Arc::new(v.policy),
            deployment_at: v.deployment_at,
        }
    }
}

/// The load result of one file.
type Loaded = Result<Valid, PolicyErrors>;

/// A [`Scan`] whose valid policies are shared.
#[derive(Debug, Default)]
struct LoadedScan {
    files: BTreeMap<PathBuf, Loaded>,
    unreadable: Option<PolicyError>,
}

/// [`merge`] on shared policies.
fn merge_loaded(current: &PolicySet, scan: LoadedScan) -> Merged {
    if let Some(error) = scan.unreadable {
        return Merged {
            set: current.clone(),
            errors: vec![error],
            changes: BTreeMap::new(),
        };
    }
    let mut errors: Vec<PolicyError> = Vec::new();
    let mut held: BTreeSet<PathBuf> = BTreeSet::new();
    let mut rejected: BTreeSet<PathBuf> = BTreeSet::new();
    let mut proposed: BTreeMap<PathBuf, Arc<Policy>> = BTreeMap::new();
    let mut deployment_at: BTreeMap<PathBuf, Location> = BTreeMap::new();
    for (file, result) in scan.files {
        match result {
            Ok(valid) => {
                deployment_at.insert(file.clone(), valid.deployment_at);
                // Unchanged content keeps the same Arc, so subscribers can compare cheaply.
                let policy = match current.by_file.get(&file) {
                    Some(previous)
                        if Arc::ptr_eq(previous, &valid.policy) || **previous == *valid.policy =>
                    {
                        previous.clone()
                    }
                    _ => valid.policy,
                };
                proposed.insert(file, policy);
            }
            Err(file_errors) => {
                errors.extend(file_errors);
                match current.by_file.get(&file) {
                    Some(previous) => {
                        proposed.insert(file.clone(), previous.clone());
                        held.insert(file);
                    }
                    None => {
                        rejected.insert(file);
                    }
                }
            }
        }
    }
    resolve_conflicts(
        current,
        &mut proposed,
        &deployment_at,
        &mut held,
        &mut rejected,
        &mut errors,
    );

    let mut changes = BTreeMap::new();
    for (file, policy) in &proposed {
        let change = match current.by_file.get(file) {
            _ if held.contains(file) => Some(FileChange::Held),
            None => Some(FileChange::Added),
            // Equal content shares the previous Arc (above), so identity is equality.
            Some(previous) if !Arc::ptr_eq(previous, policy) => Some(FileChange::Updated),
            Some(_) => None,
        };
        if let Some(change) = change {
            changes.insert(file.clone(), change);
        }
    }
    for file in current.by_file.keys() {
        if !proposed.contains_key(file) {
            changes.insert(file.clone(), FileChange::Removed);
        }
    }
    for file in rejected {
        changes.entry(file).or_insert(FileChange::Rejected);
    }
    errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    Merged {
        set: PolicySet { by_file: proposed },
        errors,
        changes,
    }
}

/// Leaves at most one proposed policy per Deployment (the rule of
/// [`Claims`], in [`PolicySet::claim_order`]). Each round, every conflict's
/// loser falls back to its previous version (at most once per file, so this
/// ends) or is dropped.
fn resolve_conflicts(
    current: &PolicySet,
    proposed: &mut BTreeMap<PathBuf, Arc<Policy>>,
    deployment_at: &BTreeMap<PathBuf, Location>,
    held: &mut BTreeSet<PathBuf>,
    rejected: &mut BTreeSet<PathBuf>,
    errors: &mut Vec<PolicyError>,
) {
    loop {
        let mut claims = Claims::default();
        let mut losers: Vec<PathBuf> = Vec::new();
        for (file, p) in current.claim_order(proposed) {
            // A loser is always a file loaded by this scan: a previous version
            // is the one holding its Deployment.
            let at = deployment_at
                .get(file)
                .copied()
                .unwrap_or(Location::UNKNOWN);
            if let Err(e) = claims.claim(file, p, at) {
                errors.push(e);
                losers.push(file.clone());
            }
        }
        let mut fell_back = false;
        for loser in &losers {
            let previous = current.by_file.get(loser);
            match (previous, proposed.get(loser)) {
                (Some(previous), Some(now)) if previous != now => {
                    proposed.insert(loser.clone(), previous.clone());
                    held.insert(loser.clone());
                    fell_back = true;
                }
                _ => {
                    proposed.remove(loser);
                    held.remove(loser);
                    rejected.insert(loser.clone());
                }
            }
        }
        if !fell_back {
            return;
        }
    }
}

/// Reads the policy path: every `*.yaml`/`*.yml` directly in a directory
/// (following symlinks, as a ConfigMap mount needs), or one file.
///
/// A dangling symlink counts as absent: during a ConfigMap update the link of
/// a removed key dangles until the kubelet deletes it.
pub fn scan(path: &Path) -> Scan {
    match list(path) {
        Ok(entries) => Scan {
            files: entries
                .into_iter()
                .map(|entry| match entry {
                    Entry::File(file, _) => {
                        let loaded = load_validated(&file);
                        (file, loaded)
                    }
                    Entry::Failed(file, error) => (file, Err(error.into())),
                })
                .collect(),
            unreadable: None,
        },
        Err(error) => Scan {
            files: BTreeMap::new(),
            unreadable: Some(error),
        },
    }
}

/// One policy file of the policy path, before it is read.
enum Entry {
    /// A file and its metadata (of the symlink's target).
    File(PathBuf, Metadata),
    /// A file whose metadata cannot be read.
    Failed(PathBuf, PolicyError),
}

/// The policy files of the policy path (see [`scan`]), or why the path
/// itself cannot be read.
fn list(path: &Path) -> Result<Vec<Entry>, PolicyError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| unreadable(path, format!("cannot read policy path: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![Entry::File(path.to_path_buf(), meta)]);
    }
    let cannot_list = |e: std::io::Error| unreadable(path, format!("cannot list directory: {e}"));
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path).map_err(cannot_list)? {
        let file = entry.map_err(cannot_list)?.path();
        if !is_policy_file_name(&file) {
            continue;
        }
        match std::fs::metadata(&file) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => found.push(Entry::File(file, m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let error = PolicyError::whole_file(&file, format!("cannot read file: {e}"));
                found.push(Entry::Failed(file, error));
            }
        }
    }
    Ok(found)
}

fn unreadable(path: &Path, message: String) -> PolicyError {
    PolicyError::whole_file(path, format!("{message}; the policies in force are kept"))
}

/// A file's version as its metadata shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(meta: &Metadata) -> Self {
        Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: inode(meta),
        }
    }

    /// Whether this stamp, read at `now`, vouches for the content from now
    /// on: any later write gets a later mtime ([`STAMP_SETTLE`]).
    fn settled_at(&self, now: SystemTime) -> bool {
        self.modified
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= STAMP_SETTLE)
    }
}

#[cfg(unix)]
fn inode(meta: &Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &Metadata) -> u64 {
    0
}

/// What the last scan learnt about one file.
#[derive(Debug, Clone)]
struct Cached {
    stamp: Stamp,
    /// The stamp alone vouches for the content ([`Stamp::settled_at`]).
    settled: bool,
    /// FNV-1a of the content.
    hash: u64,
    loaded: Loaded,
}

/// Work counters of a [`PolicyStore`] since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadStats {
    /// Scans of the policy path, the first load included.
    pub scans: u64,
    /// Files read (their stamp changed or had not settled).
    pub files_read: u64,
    /// Files parsed and validated (their content changed).
    pub files_parsed: u64,
}

/// The files of earlier scans, so that a scan parses only what changed.
#[derive(Debug, Default)]
struct FileCache {
    files: BTreeMap<PathBuf, Cached>,
    stats: ReloadStats,
}

impl FileCache {
    /// Scans `path` like [`scan`], reading only the files whose stamp
    /// changed and parsing only those whose content changed.
    fn scan(&mut self, path: &Path) -> LoadedScan {
        self.stats.scans += 1;
        let entries = match list(path) {
            Ok(entries) => entries,
            // Nothing is forgotten: the files are likely back unchanged.
            Err(error) => {
                return LoadedScan {
                    files: BTreeMap::new(),
                    unreadable: Some(error),
                }
            }
        };
        let now = SystemTime::now();
        let mut previous = std::mem::take(&mut self.files);
        let mut files = BTreeMap::new();
        for entry in entries {
            let (file, loaded) = match entry {
                Entry::File(file, meta) => {
                    let cached = previous.remove(&file);
                    let loaded = self.load(&file, Stamp::of(&meta), cached, now);
                    (file, loaded)
                }
                Entry::Failed(file, error) => (file, Err(error.into())),
            };
            files.insert(file, loaded);
        }
        LoadedScan {
            files,
            unreadable: None,
        }
    }

    /// One file's load result: the cached one while its stamp or content is
    /// unchanged, else parsed anew. Read errors are not cached (retried).
    fn load(
        &mut self,
        file: &Path,
        stamp: Stamp,
        cached: Option<Cached>,
        now: SystemTime,
    ) -> Loaded {
        if let Some(c) = cached.as_ref().filter(|c| c.settled && c.stamp == stamp) {
            let loaded = c.loaded.clone();
            self.files.insert(file.to_path_buf(), c.clone());
            return loaded;
        }
        self.stats.files_read += 1;
        let bytes = read_policy_bytes(file)?;
        let hash = fnv1a64(bytes.iter().copied());
        let loaded = match cached {
            Some(c) if c.hash == hash => c.loaded,
            _ => {
                self.stats.files_parsed += 1;
                parse_validated_bytes(&bytes, file).map(Valid::from)
            }
        };
        let entry = Cached {
            stamp,
            settled: stamp.settled_at(now),
            hash,
            loaded: loaded.clone(),
        };
        self.files.insert(file.to_path_buf(), entry);
        loaded
    }
}

/// Which filesystem events wake a rescan: changes to a policy file, to the
/// watched path itself or to a ConfigMap's `..data` link. Never access
/// events: a rescan opens the directory and every file, so they are mostly
/// canaryd's own (issue 16).
#[derive(Debug, Clone)]
struct EventFilter {
    /// The file name of a single watched policy file; `None` for a directory.
    file_name: Option<std::ffi::OsString>,
    dir: PathBuf,
}

impl EventFilter {
    fn wakes(&self, event: &notify::Event) -> bool {
        if event.need_rescan() {
            return true;
        }
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return false;
        }
        // An event without a path says nothing of what it concerns: rescan.
        event.paths.is_empty() || event.paths.iter().any(|p| self.concerns(p))
    }

    fn concerns(&self, path: &Path) -> bool {
        let name = path.file_name();
        if path == self.dir || name == Some(OsStr::new(CONFIGMAP_DATA_LINK)) {
            return true;
        }
        match &self.file_name {
            Some(watched) => name == Some(watched.as_os_str()),
            None => is_policy_file_name(path),
        }
    }
}

/// Timings of a [`PolicyStore`]; defaults are this module's constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadOptions {
    /// Full rescan interval ([`RESCAN_INTERVAL`]).
    pub rescan_interval: Duration,
    /// Wait after an event before rescanning ([`SETTLE_DELAY`]).
    pub settle_delay: Duration,
    /// Watch filesystem events (true) or rely on the rescan alone (false).
    pub watch_events: bool,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        ReloadOptions {
            rescan_interval: RESCAN_INTERVAL,
            settle_delay: SETTLE_DELAY,
            watch_events: true,
        }
    }
}

/// Holds the policies in force and publishes every change.
///
/// Subscribers get the whole set through [`PolicyStore::subscribe`] and the
/// current problems (one `file:line:column: field: message` line each) through
/// [`PolicyStore::subscribe_errors`]; with [`PolicyStore::attach`] the problems
/// also go to `/v1/rollouts` as `policyErrors`.
pub struct PolicyStore {
    path: PathBuf,
    options: ReloadOptions,
    policies: watch::Sender<Arc<PolicySet>>,
    errors: watch::Sender<Arc<Vec<String>>>,
    server: Option<Arc<ServerState>>,
    stats: watch::Sender<ReloadStats>,
    // Serialises reloads: read current → merge → publish is one step.
    cache: Mutex<FileCache>,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .field("policies", &self.policies.borrow().len())
            .finish_non_exhaustive()
    }
}

impl PolicyStore {
    /// Loads `path` (a directory or one file) with default timings. Never
    /// fails: problems, including an unreadable path, are in
    /// [`PolicyStore::errors`] and the valid policies are in force.
    pub fn open(path: impl Into<PathBuf>) -> Self {
        Self::with_options(path, ReloadOptions::default())
    }

    /// Like [`PolicyStore::open`] with explicit timings.
    pub fn with_options(path: impl Into<PathBuf>, options: ReloadOptions) -> Self {
        let path = path.into();
        let mut cache = FileCache::default();
        let merged = merge_loaded(&PolicySet::default(), cache.scan(&path));
        let errors: Vec<String> = merged.errors.iter().map(ToString::to_string).collect();
        log_changes(&merged, true);
        let (policies, _) = watch::channel(Arc::new(merged.set));
        let (errors, _) = watch::channel(Arc::new(errors));
        let (stats, _) = watch::channel(cache.stats);
        PolicyStore {
            path,
            options,
            policies,
            errors,
            server: None,
            stats,
            cache: Mutex::new(cache),
        }
    }

    /// Also publishes problems on the server's status board and marks
    /// policies as loaded for `/readyz`.
    pub fn attach(mut self, server: Arc<ServerState>) -> Self {
        publish_to_server(&server, &self.errors.borrow());
        self.server = Some(server);
        self
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The policies in force now.
    pub fn current(&self) -> Arc<PolicySet> {
        self.policies.borrow().clone()
    }

    /// Problems of the last load, one display line each.
    pub fn errors(&self) -> Arc<Vec<String>> {
        self.errors.borrow().clone()
    }

    /// A receiver that sees every new policy set (only when it changed).
    pub fn subscribe(&self) -> watch::Receiver<Arc<PolicySet>> {
        self.policies.subscribe()
    }

    /// A receiver that sees every change of the problem list.
    pub fn subscribe_errors(&self) -> watch::Receiver<Arc<Vec<String>>> {
        self.errors.subscribe()
    }

    /// Work done so far: scans, files read, files parsed.
    pub fn stats(&self) -> ReloadStats {
        *self.stats.borrow()
    }

    /// A receiver that sees the work counters after every scan.
    pub fn subscribe_stats(&self) -> watch::Receiver<ReloadStats> {
        self.stats.subscribe()
    }

    /// Rescans the path now and publishes what changed; only changed files
    /// are parsed. Blocking file I/O and parsing: call it from a blocking
    /// context (the watch loop does).
    pub fn reload(&self) -> Merged {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current();
        let merged = merge_loaded(&current, cache.scan(&self.path));
        self.stats.send_replace(cache.stats);
        let errors: Vec<String> = merged.errors.iter().map(ToString::to_string).collect();
        let errors_changed = **self.errors.borrow() != errors;
        log_changes(&merged, errors_changed);
        // Errors first: whoever sees the new set also sees why a file was held.
        if errors_changed {
            if let Some(server) = &self.server {
                publish_to_server(server, &errors);
            }
            self.errors.send_replace(Arc::new(errors));
        }
        if !same_policies(&merged.set, &current) {
            self.policies.send_replace(Arc::new(merged.set.clone()));
        }
        merged
    }

    /// Watches the path and reloads on every change until `shutdown`
    /// completes. Never fails: a watch that cannot be set up is logged and
    /// the periodic rescan carries on alone.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        // Capacity 1: one pending wake-up is enough, as a reload reads everything.
        let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
        let mut armed: Option<(notify::RecommendedWatcher, Option<u64>)> = None;
        let mut rescan = tokio::time::interval(self.options.rescan_interval);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rescan.tick().await; // the first tick is immediate; the store is already loaded
        if self.options.watch_events {
            armed = self.arm(&wake_tx);
        }
        // Whatever changed between loading and arming the watch.
        self.clone().reload_in_background("start").await;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                Some(()) = wake_rx.recv() => {
                    tokio::time::sleep(self.options.settle_delay).await;
                    while wake_rx.try_recv().is_ok() {}
                    self.clone().reload_in_background("change").await;
                }
                _ = rescan.tick() => {
                    // Re-arm when the directory was replaced (its watch died with it).
                    if self.options.watch_events
                        && armed.as_ref().is_none_or(|(_, id)| *id != dir_identity(self.watch_dir()))
                    {
                        armed = self.arm(&wake_tx);
                    }
                    self.clone().reload_in_background("rescan").await;
                }
            }
        }
    }

    async fn reload_in_background(self: Arc<Self>, cause: &'static str) {
        if let Err(e) = tokio::task::spawn_blocking(move || self.reload()).await {
            tracing::error!(cause, error = %e, "Policy reload task failed.");
        }
    }

    /// The directory to watch: the path itself, or a file's directory.
    fn watch_dir(&self) -> &Path {
        if self.path.is_dir() {
            &self.path
        } else {
            match self.path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            }
        }
    }

    fn arm(&self, wake: &mpsc::Sender<()>) -> Option<(notify::RecommendedWatcher, Option<u64>)> {
        let dir = self.watch_dir().to_path_buf();
        let wake = wake.clone();
        let filter = EventFilter {
            file_name: (!self.path.is_dir())
                .then(|| self.path.file_name().map(ToOwned::to_owned))
                .flatten(),
            dir: dir.clone(),
        };
        let handler = move |event: notify::Result<notify::Event>| {
            match &event {
                Ok(event) if !filter.wakes(event) => return,
                Ok(_) => {}
                // Overflowed queues end up here too: rescan, which reads everything.
                Err(e) => tracing::debug!(error = %e, "Policy directory watch error; rescanning."),
            }
            // Full means a wake-up is already pending.
            let _ = wake.try_send(());
        };
        let id = dir_identity(&dir);
        let result = notify::recommended_watcher(handler).and_then(|mut w| {
            w.watch(&dir, RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        match result {
            Ok(w) => {
                tracing::debug!(dir = %dir.display(), "Watching the policy directory.");
                Some((w, id))
            }
            Err(e) => {
                tracing::warn!(
                    dir = %dir.display(),
                    error = %e,
                    rescan_secs = self.options.rescan_interval.as_secs(),
                    "Cannot watch the policy directory; relying on the periodic rescan."
                );
                None
            }
        }
    }
}

/// Whether two sets hold the same policies. Merging keeps the previous `Arc`
/// of an unchanged policy, so identity suffices and no policy is compared
/// field by field.
fn same_policies(a: &PolicySet, b: &PolicySet) -> bool {
    a.by_file.len() == b.by_file.len()
        && a.by_file
            .iter()
            .zip(&b.by_file)
            .all(|((fa, pa), (fb, pb))| fa == fb && Arc::ptr_eq(pa, pb))
}

/// Identity of a directory (inode), to notice it being replaced.
#[cfg(unix)]
fn dir_identity(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

#[cfg(not(unix))]
fn dir_identity(_dir: &Path) -> Option<u64> {
    Some(0)
}

fn publish_to_server(server: &ServerState, errors: &[String]) {
    match server.status.write() {
        Ok(mut board) => board.policy_errors = errors.to_vec(),
        Err(poisoned) => poisoned.into_inner().policy_errors = errors.to_vec(),
    }
    server
        .readiness
        .policies_loaded
        .store(true, Ordering::Relaxed);
}

/// Logs what a reload changed. Held and rejected files are logged only with
/// new errors, so a file that stays broken is not reported every rescan.
fn log_changes(merged: &Merged, errors_changed: bool) {
    for (file, change) in &merged.changes {
        let file_errors = || {
            merged
                .errors
                .iter()
                .filter(|e| e.file == *file)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let service = merged
            .set
            .in_file(file)
            .map(|p| p.service.as_str())
            .unwrap_or("");
        match change {
            FileChange::Added => {
                tracing::info!(file = %file.display(), service, "Policy added.")
            }
            FileChange::Updated => {
                tracing::info!(file = %file.display(), service, "Policy updated.")
            }
            FileChange::Removed => {
                tracing::info!(file = %file.display(), "Policy removed: its file is gone.")
            }
            FileChange::Held if errors_changed => tracing::warn!(
                file = %file.display(),
                service,
                errors = %file_errors(),
                "Policy file rejected; its previous valid version stays in force."
            ),
            FileChange::Rejected if errors_changed => tracing::warn!(
                file = %file.display(),
                errors = %file_errors(),
                "Policy file rejected; it has no valid version in force."
            ),
            FileChange::Held | FileChange::Rejected => {}
        }
    }
    if errors_changed {
        if let Some(e) = merged
            .errors
            .iter()
            .find(|e| !merged.changes.contains_key(&e.file))
        {
            // An unreadable path: no file changed, but the problem must be seen.
            tracing::warn!(error = %e, "Policy path unreadable; the policies in force are kept.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_validated;

    fn yaml(service: &str, deployment: &str, observe: &str) -> String {
        format!(
            "service: {service}
namespace: default
deployment: {deployment}
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

    fn load(file: &str, text: &str) -> (PathBuf, Result<Validated, PolicyErrors>) {
        let path = PathBuf::from(file);
        let result = parse_validated(text, &path);
        (path, result)
    }

    fn valid(
        file: &str,
        service: &str,
        deployment: &str,
        observe: &str,
    ) -> (PathBuf, Result<Validated, PolicyErrors>) {
        let loaded = load(file, &yaml(service, deployment, observe));
        assert!(loaded.1.is_ok(), "{:?}", loaded.1);
        loaded
    }

    fn invalid(file: &str) -> (PathBuf, Result<Validated, PolicyErrors>) {
        let loaded = load(file, "service: broken\nbogus: 1\n");
        assert!(loaded.1.is_err());
        loaded
    }

    fn scan_of(files: Vec<(PathBuf, Result<Validated, PolicyErrors>)>) -> Scan {
        Scan {
            files: files.into_iter().collect(),
            unreadable: None,
        }
    }

    fn observe_of(set: &PolicySet, file: &str) -> Option<Duration> {
        set.in_file(Path::new(file)).map(|p| match &p.strategy {
            crate::policy::Strategy::Canary(c) => c.steps[0].observe,
            crate::policy::Strategy::BlueGreen(b) => b.observe,
        })
    }

    /// The service whose policy manages Deployment `default/deployment`.
    fn service_at<'a>(set: &'a PolicySet, deployment: &str) -> Option<&'a str> {
        set.get("default", deployment).map(|p| p.service.as_str())
    }

    /// A first scan of a.yaml and b.yaml (services a and b, observe 1m) on
    /// Deployments `default/<da>` and `default/<db>`.
    fn a_and_b(da: &str, db: &str) -> Merged {
        merge(
            &PolicySet::default(),
            scan_of(vec![
                valid("a.yaml", "a", da, "1m"),
                valid("b.yaml", "b", db, "1m"),
            ]),
        )
    }

    fn changes(pairs: &[(&str, FileChange)]) -> BTreeMap<PathBuf, FileChange> {
        pairs.iter().map(|(f, c)| (PathBuf::from(f), *c)).collect()
    }

    #[test]
    fn valid_files_are_added_updated_and_removed() {
        let first = a_and_b("a", "b");
        assert!(first.errors.is_empty());
        assert_eq!(first.set.len(), 2);
        assert_eq!(
            first.changes,
            changes(&[("a.yaml", FileChange::Added), ("b.yaml", FileChange::Added)])
        );

        let second = merge(&first.set, scan_of(vec![valid("a.yaml", "a", "a", "5m")]));
        assert_eq!(
            second.changes,
            changes(&[
                ("a.yaml", FileChange::Updated),
                ("b.yaml", FileChange::Removed)
            ])
        );
        assert_eq!(
            observe_of(&second.set, "a.yaml"),
            Some(Duration::from_secs(300))
        );
        assert!(second.set.get("default", "b").is_none());
    }

    #[test]
    fn an_unchanged_scan_changes_nothing_and_keeps_the_same_policies() {
        let first = merge(
            &PolicySet::default(),
            scan_of(vec![valid("a.yaml", "a", "a", "1m")]),
        );
        let again = merge(&first.set, scan_of(vec![valid("a.yaml", "a", "a", "1m")]));
        assert!(again.changes.is_empty());
        assert_eq!(again.set, first.set);
        let (before, after) = (
            first.set.in_file(Path::new("a.yaml")).unwrap(),
            again.set.in_file(Path::new("a.yaml")).unwrap(),
        );
        assert!(Arc::ptr_eq(before, after));
    }

    #[test]
    fn an_invalid_file_keeps_its_previous_version_while_others_change() {
        let first = a_and_b("a", "b");
        let second = merge(
            &first.set,
            scan_of(vec![invalid("a.yaml"), valid("b.yaml", "b", "b", "7m")]),
        );
        assert_eq!(
            second.changes,
            changes(&[
                ("a.yaml", FileChange::Held),
                ("b.yaml", FileChange::Updated)
            ])
        );
        assert_eq!(
            observe_of(&second.set, "a.yaml"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            observe_of(&second.set, "b.yaml"),
            Some(Duration::from_secs(420))
        );
        assert!(!second.errors.is_empty());
        assert!(second.errors.iter().all(|e| e.file == Path::new("a.yaml")));
        let shown = second.errors[0].to_string();
        assert!(shown.starts_with("a.yaml:"), "{shown}");

        // Fixed later: the new version applies and the errors are gone.
        let third = merge(
            &second.set,
            scan_of(vec![
                valid("a.yaml", "a", "a", "3m"),
                valid("b.yaml", "b", "b", "7m"),
            ]),
        );
        assert!(third.errors.is_empty());
        assert_eq!(third.changes, changes(&[("a.yaml", FileChange::Updated)]));
        assert_eq!(
            observe_of(&third.set, "a.yaml"),
            Some(Duration::from_secs(180))
        );
    }

    #[test]
    fn a_new_invalid_file_is_rejected_and_a_deleted_invalid_file_is_removed() {
        let first = merge(
            &PolicySet::default(),
            scan_of(vec![valid("a.yaml", "a", "a", "1m"), invalid("new.yaml")]),
        );
        assert_eq!(
            first.changes,
            changes(&[
                ("a.yaml", FileChange::Added),
                ("new.yaml", FileChange::Rejected)
            ])
        );
        assert_eq!(first.set.len(), 1);

        let broken = merge(&first.set, scan_of(vec![invalid("a.yaml")]));
        assert_eq!(broken.set.len(), 1);
        let deleted = merge(&broken.set, scan_of(vec![]));
        assert!(deleted.set.is_empty());
        assert_eq!(deleted.changes, changes(&[("a.yaml", FileChange::Removed)]));
        assert!(deleted.errors.is_empty());
    }

    #[test]
    fn an_unreadable_path_keeps_everything() {
        let first = merge(
            &PolicySet::default(),
            scan_of(vec![valid("a.yaml", "a", "a", "1m")]),
        );
        let gone = merge(
            &first.set,
            Scan {
                files: BTreeMap::new(),
                unreadable: Some(PolicyError::whole_file(
                    Path::new("policies"),
                    "cannot read",
                )),
            },
        );
        assert_eq!(gone.set, first.set);
        assert!(gone.changes.is_empty());
        assert_eq!(gone.errors.len(), 1);
    }

    #[test]
    fn the_file_already_managing_a_deployment_wins_a_conflict() {
        let first = merge(
            &PolicySet::default(),
            scan_of(vec![valid("z.yaml", "z", "shared", "1m")]),
        );
        // a.yaml sorts first but z.yaml already manages default/shared.
        let second = merge(
            &first.set,
            scan_of(vec![
                valid("a.yaml", "a", "shared", "2m"),
                valid("z.yaml", "z", "shared", "1m"),
            ]),
        );
        assert_eq!(second.set.len(), 1);
        assert_eq!(service_at(&second.set, "shared"), Some("z"));
        assert_eq!(second.changes, changes(&[("a.yaml", FileChange::Rejected)]));
        assert_eq!(
            second.errors[0].to_string(),
            "a.yaml:3:13: deployment: Deployment default/shared already has a policy in z.yaml; \
             expected one policy per Deployment"
        );
    }

    #[test]
    fn without_an_owner_the_first_file_by_name_wins() {
        let merged = merge(
            &PolicySet::default(),
            scan_of(vec![
                valid("b.yaml", "b", "shared", "1m"),
                valid("a.yaml", "a", "shared", "1m"),
            ]),
        );
        assert_eq!(merged.set.len(), 1);
        assert!(merged.set.in_file(Path::new("a.yaml")).is_some());
        assert_eq!(merged.changes[Path::new("b.yaml")], FileChange::Rejected);
    }

    #[test]
    fn a_file_moved_onto_a_taken_deployment_falls_back_to_its_previous_version() {
        let first = a_and_b("da", "db");
        // b.yaml now claims a's Deployment: rejected, its previous version stays.
        let second = merge(
            &first.set,
            scan_of(vec![
                valid("a.yaml", "a", "da", "1m"),
                valid("b.yaml", "b", "da", "2m"),
            ]),
        );
        assert_eq!(second.changes, changes(&[("b.yaml", FileChange::Held)]));
        assert_eq!(service_at(&second.set, "db"), Some("b"));
        assert_eq!(service_at(&second.set, "da"), Some("a"));
        assert_eq!(second.errors.len(), 1);
    }

    #[test]
    fn a_fallback_that_conflicts_again_is_resolved_for_its_owner() {
        let first = a_and_b("da", "db");
        // b moves to a's Deployment and a new c.yaml takes b's old one: b falls
        // back to db, which it still owns, so c loses.
        let second = merge(
            &first.set,
            scan_of(vec![
                valid("a.yaml", "a", "da", "1m"),
                valid("b.yaml", "b", "da", "1m"),
                valid("c.yaml", "c", "db", "1m"),
            ]),
        );
        assert_eq!(second.set.len(), 2);
        assert_eq!(service_at(&second.set, "db"), Some("b"));
        assert_eq!(
            second.changes,
            changes(&[
                ("b.yaml", FileChange::Held),
                ("c.yaml", FileChange::Rejected)
            ])
        );
        assert_eq!(second.errors.len(), 2);
        assert_eq!(second.set.by_target().len(), second.set.len());
    }

    #[test]
    fn from_policies_keeps_one_policy_per_deployment() {
        let a = valid("a.yaml", "a", "shared", "1m").1.unwrap().policy;
        let b = valid("b.yaml", "b", "shared", "1m").1.unwrap().policy;
        let set = PolicySet::from_policies([a, b]);
        assert_eq!(set.len(), 1);
        assert_eq!(set.iter().next().map(|p| p.service.as_str()), Some("a"));
    }

    #[test]
    fn scan_reads_yaml_files_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), yaml("a", "a", "1m")).unwrap();
        std::fs::write(dir.path().join("b.yml"), "not: [valid").unwrap();
        std::fs::write(dir.path().join("README.md"), "# notes").unwrap();
        std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("missing"), dir.path().join("gone.yaml"))
            .unwrap();
        let found = scan(dir.path());
        assert!(found.unreadable.is_none());
        let names: Vec<String> = found
            .files
            .keys()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a.yaml", "b.yml"]);
        assert!(found.files[&dir.path().join("a.yaml")].is_ok());
        assert!(found.files[&dir.path().join("b.yml")].is_err());

        let missing = scan(&dir.path().join("nope"));
        assert!(missing.files.is_empty());
        assert!(missing.unreadable.is_some());
    }

    fn event(kind: notify::EventKind, path: &Path) -> notify::Event {
        notify::Event::new(kind).add_path(path.to_path_buf())
    }

    #[test]
    fn reading_the_policies_wakes_no_rescan_but_changes_do() {
        use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind};
        use notify::event::{RemoveKind, RenameMode};
        use notify::EventKind as K;
        let dir = PathBuf::from("/policies");
        let filter = EventFilter {
            file_name: None,
            dir: dir.clone(),
        };
        let a = dir.join("a.yaml");
        let open = K::Access(AccessKind::Open(AccessMode::Any));
        let closed = K::Access(AccessKind::Close(AccessMode::Read));
        // What a scan itself causes: opening the directory and each file.
        for quiet in [event(open, &dir), event(open, &a), event(closed, &a)] {
            assert!(!filter.wakes(&quiet), "{quiet:?}");
        }
        let written = K::Modify(ModifyKind::Data(DataChange::Any));
        let renamed = K::Modify(ModifyKind::Name(RenameMode::To));
        for change in [
            event(written, &a),
            event(K::Create(CreateKind::File), &dir.join("b.yml")),
            event(K::Remove(RemoveKind::File), &a),
            event(renamed, &dir.join("..data")),
            event(K::Remove(RemoveKind::Folder), &dir),
            notify::Event::new(K::Other).set_flag(notify::event::Flag::Rescan),
        ] {
            assert!(filter.wakes(&change), "{change:?}");
        }
        // Files that are not policies, e.g. an editor's swap file.
        assert!(!filter.wakes(&event(written, &dir.join(".a.yaml.swp"))));
        assert!(!filter.wakes(&event(renamed, &dir.join("..data_tmp"))));

        let single = EventFilter {
            file_name: Some("a.yaml".into()),
            dir: dir.clone(),
        };
        assert!(single.wakes(&event(written, &a)));
        assert!(!single.wakes(&event(written, &dir.join("other.yaml"))));
        assert!(!single.wakes(&event(open, &a)));
    }

    /// Sets a file's mtime an hour back, so that its stamp settles.
    fn age(file: &Path) {
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let f = std::fs::File::options().write(true).open(file).unwrap();
        f.set_modified(hour_ago).unwrap();
    }

    #[test]
    fn a_rescan_parses_only_changed_files_and_keeps_the_others_arc() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        std::fs::write(&a, yaml("a", "a", "1m")).unwrap();
        std::fs::write(&b, yaml("b", "b", "1m")).unwrap();
        let mut cache = FileCache::default();
        let first = merge_loaded(&PolicySet::default(), cache.scan(dir.path()));
        assert_eq!(first.set.len(), 2);
        assert_eq!((cache.stats.files_read, cache.stats.files_parsed), (2, 2));

        // Fresh stamps are not trusted: read and hashed again, not parsed.
        let again = merge_loaded(&first.set, cache.scan(dir.path()));
        assert_eq!((cache.stats.files_read, cache.stats.files_parsed), (4, 2));
        assert!(again.changes.is_empty());
        assert!(same_policies(&again.set, &first.set));

        // Settled stamps are: nothing is read.
        age(&a);
        age(&b);
        cache.scan(dir.path());
        assert_eq!((cache.stats.files_read, cache.stats.files_parsed), (6, 2));
        cache.scan(dir.path());
        assert_eq!((cache.stats.files_read, cache.stats.files_parsed), (6, 2));

        // One edit: one read, one parse; b keeps its Arc.
        std::fs::write(&a, yaml("a", "a", "5m")).unwrap();
        let edited = merge_loaded(&again.set, cache.scan(dir.path()));
        assert_eq!(cache.stats.scans, 5);
        assert_eq!((cache.stats.files_read, cache.stats.files_parsed), (7, 3));
        let in_dir = |pairs: &[(&str, FileChange)]| -> BTreeMap<PathBuf, FileChange> {
            pairs
                .iter()
                .map(|(f, c)| (dir.path().join(f), *c))
                .collect()
        };
        assert_eq!(edited.changes, in_dir(&[("a.yaml", FileChange::Updated)]));
        let b_before = first.set.in_file(&b).unwrap();
        assert!(Arc::ptr_eq(b_before, edited.set.in_file(&b).unwrap()));
        assert_eq!(
            observe_of(&edited.set, &a.to_string_lossy()),
            Some(Duration::from_secs(300))
        );

        // A deleted file leaves the cache; a broken one is reported each scan.
        std::fs::remove_file(&b).unwrap();
        std::fs::write(&a, "service: broken\nbogus: 1\n").unwrap();
        let broken = merge_loaded(&edited.set, cache.scan(dir.path()));
        assert_eq!(cache.files.len(), 1);
        assert_eq!(
            broken.changes,
            changes(&[
                ("a.yaml", FileChange::Held),
                ("b.yaml", FileChange::Removed)
            ])
            .into_iter()
            .map(|(f, c)| (dir.path().join(f), c))
            .collect()
        );
        let still = merge_loaded(&broken.set, cache.scan(dir.path()));
        assert_eq!(cache.stats.files_parsed, 4);
        assert_eq!(still.errors, broken.errors);
        assert!(!still.errors.is_empty());
    }
}
