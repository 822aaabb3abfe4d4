//! Several `canaryd run` replicas and the daemon's security rules, on the real
//! control plane with a real Prometheus (issue 15): alerts posted to a
//! follower reach the leader through the cluster-wide alert record, a hung
//! leader stops acting, unsafe configuration is refused at start-up, and
//! the webhook stays bounded under 10,000 alerts.

use std::time::{Duration, Instant};

use canaryd::k8s::alert_record::RECORD_KEY;
use canaryd::rollout::Phase;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::json;

use crate::daemon::{reasons, wait_settled_on, Scene, ROLLOUT_TIMEOUT, SHORT, TOKEN, V2, V3};
use crate::support::alertmanager::{Alertmanager, Credentials};
use crate::support::cluster::wait_until;
use crate::support::daemon::{state_of, Daemon};

/// A canary whose first step lasts long enough to post alerts during it, and
/// whose policy rolls back on `service="web"` alerts.
const ALERTED_POLICY: &str = r#"
service: web
namespace: {ns}
deployment: web
progressDeadline: 60s
baseline: fresh
traffic: {type: replicas}
strategy:
  canary:
    steps:
      - size: 1
        observe: 30s
      - size: 2
        observe: 10s
analysis:
  prometheus:
    url: {prom}
  interval: 5s
  maxDuration: 5m
alerts:
  matchers: ['service="web"']
  guardWindow: 5s
"#;

/// Posts one alert about service `web` to `daemon`; returns the status code.
async fn post_web_down(daemon: &Daemon, status: &str, fingerprint: &str) -> u16 {
    let alert = json!({"version": "4", "status": status, "alerts": [{
        "status": status,
        "labels": {"alertname": "WebDown", "service": "web", "severity": "critical"},
        "fingerprint": fingerprint
    }]});
    reqwest::Client::new()
        .post(format!("{}/v1/alerts", daemon.url()))
        .bearer_auth(TOKEN)
        .json(&alert)
        .send()
        .await
        .expect("POST /v1/alerts")
        .status()
        .as_u16()
}

/// The Lease's holder.
async fn holder(scene: &Scene) -> String {
    let leases: Api<Lease> = scene.ns.api();
    leases
        .get("canaryd")
        .await
        .ok()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .unwrap_or_default()
}

/// Waits until `identity` holds the Lease.
async fn wait_holder(scene: &Scene, identity: &str, within: Duration) {
    wait_until(within, &format!("{identity} holds the Lease"), || async {
        let h = holder(scene).await;
        if h == identity {
            Ok(())
        } else {
            Err(h)
        }
    })
    .await;
}

/// Two replicas, both ready, and which one leads: (leader, follower).
async fn two_replicas(scene: &Scene) -> (Daemon, Daemon) {
    let policies = scene.policies(ALERTED_POLICY);
    let mut a = scene.daemon(&policies, "replica-a");
    let mut b = scene.daemon(&policies, "replica-b");
    a.wait_ready().await;
    b.wait_ready().await;
    let leader = wait_until(SHORT, "a Lease holder", || async {
        let h = holder(scene).await;
        if h.is_empty() {
            Err(h)
        } else {
            Ok(h)
        }
    })
    .await;
    if leader == a.identity {
        (a, b)
    } else {
        (b, a)
    }
}

/// The alert record's JSON, if it exists.
async fn record(scene: &Scene) -> Option<serde_json::Value> {
    let maps: Api<ConfigMap> = scene.ns.api();
    let cm = maps.get_opt("canaryd-alerts").await.expect("get record")?;
    let text = cm.data?.get(RECORD_KEY)?.clone();
    Some(serde_json::from_str(&text).expect("record JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_posted_to_the_follower_reach_the_leader() {
    let scene = Scene::new().await;
    scene.create_web(2).await;
    let (leader, follower) = two_replicas(&scene).await;
    scene.wait_adopted(&leader).await;
    scene.set_image(V2, None).await;
    scene
        .wait_phase(&leader, "analysis of v2", |p| p.is_analysing())
        .await;

    // A real Alertmanager whose webhook points at the follower.
    let am = Alertmanager::start(
        &format!("{}/v1/alerts", follower.url()),
        &Credentials::Inline(TOKEN.into()),
    );
    let labels = json!({"alertname": "WebDown", "service": "web", "severity": "critical"});
    am.post_alerts(&[json!({ "labels": labels })]).await;
    let posted = Instant::now();
    scene
        .wait_phase(&leader, "rolled back by the follower's alert", |p| {
            matches!(p, Phase::RollingBack | Phase::RolledBack)
        })
        .await;
    let reaction = posted.elapsed();
    let events = scene.events().await;
    let rollback = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("AlertRollback"))
        .unwrap_or_else(|| panic!("no rollback Event in {:?}", reasons(&events)));
    assert_eq!(
        rollback.reporting_instance.as_deref(),
        Some(leader.identity.as_str()),
        "the leader acted"
    );
    assert!(
        rollback
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("WebDown"),
        "{:?}",
        rollback.note
    );
    let stored = record(&scene).await.expect("the alert record exists");
    assert_eq!(
        stored["alerts"].as_object().map(|a| a.len()),
        Some(1),
        "{stored}"
    );
    eprintln!(
        "figure: alert through Alertmanager to the follower → leader in RollingBack: {reaction:?}"
    );

    // Resolved (Alertmanager sends it to the follower): the record empties
    // and the next release is judged and promoted.
    let ended = jiff::Timestamp::now().to_string();
    am.post_alerts(&[json!({ "labels": labels, "endsAt": ended })])
        .await;
    wait_until(
        SHORT,
        "the resolved notification empties the record",
        || async {
            let stored = record(&scene).await.unwrap_or_default();
            if stored["alerts"].as_object().is_some_and(|a| a.is_empty()) {
                Ok(())
            } else {
                Err(format!("{stored}; alertmanager log:\n{}", am.log_text()))
            }
        },
    )
    .await;
    scene
        .wait_phase(&leader, "v2 rolled back", |p| *p == Phase::RolledBack)
        .await;
    scene.set_image(V3, None).await;
    let d = wait_settled_on(&scene, &leader, V3).await;
    assert_eq!(state_of(&d).phase, Phase::Promoted);
    drop(follower);
    scene.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_recorded_before_a_leader_change_still_rolls_back() {
    let scene = Scene::new().await;
    scene.create_web(2).await;
    let (mut leader, follower) = two_replicas(&scene).await;
    scene.wait_adopted(&leader).await;
    // Posted to the leader, which dies before the release: only the record
    // can tell the next leader.
    assert_eq!(post_web_down(&leader, "firing", "fp-ha-2").await, 200);
    leader.kill();
    wait_holder(&scene, &follower.identity, Duration::from_secs(40)).await;
    scene.set_image(V2, None).await;
    scene
        .wait_phase(
            &follower,
            "the new leader rolls back on the recorded alert",
            |p| matches!(p, Phase::RollingBack | Phase::RolledBack),
        )
        .await;
    let d = scene.web().await;
    let reason = state_of(&d).message.unwrap_or_default();
    assert!(reason.contains("WebDown"), "{reason}");
    scene.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_alerts_in_ten_posts_stay_bounded() {
    let scene = Scene::new().await;
    scene.create_web(1).await;
    let (leader, follower) = two_replicas(&scene).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut slowest = Duration::ZERO;
    for post in 0..10 {
        // Half of them about `web` (recorded until the record is full), half
        // about services no policy names (never recorded).
        let alerts: Vec<serde_json::Value> = (0..1000)
            .map(|i| {
                let service = if i % 2 == 0 { "web" } else { "elsewhere" };
                json!({"status": "firing", "labels": {
                    "alertname": "PodCrashLooping", "service": service,
                    "pod": format!("pod-{post}-{i}")}})
            })
            .collect();
        let body = json!({"version": "4", "status": "firing", "alerts": alerts});
        let target = if post % 2 == 0 { &follower } else { &leader };
        let started = Instant::now();
        let resp = client
            .post(format!("{}/v1/alerts", target.url()))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("POST 1,000 alerts");
        slowest = slowest.max(started.elapsed());
        let status = resp.status().as_u16();
        let answer: serde_json::Value = resp.json().await.expect("JSON answer");
        assert_eq!(answer["received"], 1000, "{answer}");
        assert_eq!(answer["unmatched"], 500, "{answer}");
        statuses.push(status);
    }
    // Every POST is answered: 200 while there is room, 507 once the record is full.
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 507),
        "{statuses:?}"
    );
    assert_eq!(statuses[0], 200, "{statuses:?}");
    let maps: Api<ConfigMap> = scene.ns.api();
    let cm = maps.get("canaryd-alerts").await.expect("record");
    let bytes = cm.data.unwrap_or_default()[RECORD_KEY].len();
    assert!(
        bytes <= canaryd::alerts::record::MAX_RECORD_BYTES,
        "{bytes}"
    );
    for d in [&leader, &follower] {
        let pid = d.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .expect("VmHWM");
        eprintln!(
            "figure: 10,000 alerts in 10 POSTs: replica {} peak RSS {} MiB",
            d.identity,
            rss_kib / 1024
        );
        assert!(
            rss_kib < 256 * 1024,
            "{} peak RSS {rss_kib} KiB",
            d.identity
        );
    }
    eprintln!(
        "figure: 10,000 alerts in 10 POSTs: slowest answer {slowest:?}, statuses {statuses:?}, record {bytes} bytes"
    );
    scene.ns.cleanup().await;
}

/// Runs `canaryd run` with `args` until it exits (it must, within 10 s).
fn run_refused(args: &[&str]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .arg("run")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start canaryd run");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("canaryd run {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_configuration_is_refused_and_a_slow_header_client_is_dropped() {
    let scene = Scene::new().await;
    let policies = scene.policies(ALERTED_POLICY);
    let policies = policies.to_str().unwrap();
    let dir = scene.dir.path();
    let empty = dir.join("empty-token");
    std::fs::write(&empty, " \n").unwrap();
    let short = dir.join("short-token");
    std::fs::write(&short, "short-token\n").unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--alert-token-file", empty.to_str().unwrap()],
            "the token file is empty",
        ),
        (
            &["--alert-token-file", short.to_str().unwrap()],
            "the token has 11 bytes; at least 16",
        ),
        (
            &["--alert-token-file", "/nonexistent/token"],
            "cannot read the token file",
        ),
        (&["--listen", "0.0.0.0:0"], "is not a loopback address"),
    ];
    for (extra, message) in cases {
        let mut args = vec!["--policies", policies];
        args.extend_from_slice(extra);
        let (code, stderr) = run_refused(&args);
        assert_eq!(code, Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
    }

    // A well configured daemon hangs up on a client that never ends its headers.
    let mut daemon = scene.daemon(&scene.policies(ALERTED_POLICY), "replica-a");
    daemon.wait_ready().await;
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", daemon.port))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    slow.write_all(b"POST /v1/alerts HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(
        canaryd::daemon::server::HEADER_READ_TIMEOUT + Duration::from_secs(10),
        async {
            loop {
                match slow.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        },
    )
    .await;
    assert!(closed.is_ok(), "the slow-header connection stayed open");
    eprintln!(
        "figure: slow-header connection dropped after {:?}",
        started.elapsed()
    );
    scene.ns.cleanup().await;
}

/// Sends `signal` (e.g. `-STOP`) to the daemon's process.
fn signal(daemon: &Daemon, signal: &str) {
    let pid = daemon.child.as_ref().expect("running").id();
    let sent = std::process::Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(sent.success(), "kill {signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_leader_stops_acting_and_the_other_takes_over() {
    let scene = Scene::new().await;
    scene.create_web(2).await;
    let (leader, follower) = two_replicas(&scene).await;
    scene.wait_adopted(&leader).await;
    scene.set_image(V2, None).await;
    scene
        .wait_phase(&leader, "analysis of v2", |p| p.is_analysing())
        .await;

    // Hung, not dead: the process keeps its sockets and its belief that it leads.
    signal(&leader, "-STOP");
    let stopped = k8s_openapi::jiff::Timestamp::now();
    let next = follower.identity.clone();
    wait_holder(&scene, &next, Duration::from_secs(60)).await;
    // The new leader acts (its Events), then the old one wakes up.
    wait_until(ROLLOUT_TIMEOUT, "an Event from the new leader", || async {
        let events = scene.events().await;
        if events
            .iter()
            .any(|e| e.reporting_instance.as_deref() == Some(next.as_str()))
        {
            Ok(())
        } else {
            Err(format!("{:?}", reasons(&events)))
        }
    })
    .await;
    signal(&leader, "-CONT");
    let d = wait_settled_on(&scene, &follower, V2).await;
    assert_eq!(state_of(&d).phase, Phase::Promoted);
    // Nothing the stale leader did after it hung reached the cluster.
    let stale: Vec<String> = scene
        .events()
        .await
        .iter()
        .filter(|e| e.reporting_instance.as_deref() == Some(leader.identity.as_str()))
        .filter(|e| e.event_time.as_ref().is_some_and(|t| t.0 > stopped))
        .map(|e| format!("{:?}", e.reason))
        .collect();
    assert!(stale.is_empty(), "the stale leader wrote Events: {stale:?}");
    let log = leader.log_text();
    assert!(
        log.contains("Lost leadership") || log.contains("Renew deadline passed"),
        "the stale leader never noticed:\n{}",
        leader.tail()
    );
    scene.ns.cleanup().await;
}
