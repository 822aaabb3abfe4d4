//! Policy loading: exact messages for broken fixtures, the `canaryd check`
//! binary, and the example policies in `policies/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use canaryd::policy::{
    self, BaselineMode, CanarySize, JudgeMode, MatchOp, OnNoData, PolicyErrors, PrometheusAuth,
    Strategy, Traffic,
};

const FIXTURES: &str = "tests/fixtures/policies";

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn lines(e: &PolicyErrors) -> Vec<String> {
    e.iter().map(ToString::to_string).collect()
}

/// Loads a fixture that must fail and returns its messages.
fn errors_of(name: &str) -> Vec<String> {
    match policy::load_file(&fixture(name)) {
        Ok(p) => panic!("{name} unexpectedly validated: {p:?}"),
        Err(e) => lines(&e),
    }
}

/// Parses inline YAML that must fail and returns its messages.
fn parse_errors(src: &str) -> Vec<String> {
    match policy::parse_str(src, Path::new("inline.yaml")) {
        Ok(p) => panic!("unexpectedly valid: {p:?}"),
        Err(e) => lines(&e),
    }
}

const MINIMAL: &str = "service: myapp
namespace: test
deployment: myapp-deploy
analysis:
  prometheus:
    url: http://prometheus:9090
";

#[test]
fn each_broken_fixture_reports_its_exact_message() {
    let k = "known: namespace, service, deployment, role, podRegex, window";
    let cases: Vec<(&str, String)> = vec![
        ("unknown-field.yaml", "7:3: analysis.intervall: unknown field \"intervall\" (did you mean \"interval\"?); expected one of: prometheus, interval, maxDuration, alpha, onNoData, minRequestsPerStep, mode, classic, metrics".into()),
        ("bad-duration.yaml", "8:18: strategy.canary.steps[0].observe: expected a duration like 30s, 10m, 1h30m or 500ms, found \"10 minutes\"".into()),
        ("negative-duration.yaml", "4:19: progressDeadline: duration must be positive, found \"-5m\"".into()),
        ("zero-duration.yaml", "8:16: alerts.guardWindow: duration must be positive, found \"0s\"".into()),
        ("size-not-growing.yaml", "9:15: strategy.canary.steps[1].size: size 10% does not grow: the previous size is also 10% (steps[0]); each step must grow the size or the weight".into()),
        ("size-shrinks.yaml", "9:15: strategy.canary.steps[1].size: size 2 is smaller than the previous size 3 (steps[0]); sizes must not shrink".into()),
        ("weight-out-of-range.yaml", "11:17: strategy.canary.steps[0].weight: weight must be a whole number from 1 to 99 (0 sends the canary no traffic and 100 the baseline none, so such a step could never be judged; promotion moves all traffic), found 150".into()),
        ("weight-with-replicas.yaml", "8:17: strategy.canary.steps[0].weight: weight needs traffic.type ingress-nginx or gateway-api, but traffic.type is replicas".into()),
        ("percent-over-100.yaml", "7:15: strategy.canary.steps[0].size: percentage must be above 0% and at most 100%, found \"150%\"".into()),
        ("percent-zero.yaml", "7:15: strategy.canary.steps[0].size: percentage must be above 0% and at most 100%, found \"0%\"".into()),
        ("unknown-variable.yaml", format!("11:14: analysis.metrics[0].total: unknown variable {{{{pods}}}}; {k}")),
        ("missing-query.yaml", "8:7: analysis.metrics[0].query: missing required field query (the gauge query, needed by kind gauge)".into()),
        ("duplicate-metric.yaml", "11:13: analysis.metrics[1].name: duplicate metric name \"cpu\"; analysis.metrics[0] already uses it".into()),
        ("not-yaml.yaml", "2:12: invalid YAML: unclosed bracket '['".into()),
        ("top-level-list.yaml", "1:1: expected a mapping of policy fields at the top level, found a sequence".into()),
        ("missing-required.yaml", "1:1: namespace: missing required field namespace (a Kubernetes name)".into()),
        ("both-strategies.yaml", "7:5: strategy: expected exactly one of canary or blueGreen, found both".into()),
        ("observe-below-interval.yaml", "8:18: strategy.canary.steps[0].observe: observe 30s is shorter than analysis.interval 1m".into()),
        ("wrong-type.yaml", "7:10: analysis.alpha: expected a number, found \"lots\"".into()),
        ("not-utf8.yaml", "1:13: expected UTF-8 YAML text, found an invalid byte".into()),
    ];
    for (name, expected) in cases {
        let want = format!("{FIXTURES}/{name}:{expected}");
        assert_eq!(errors_of(name), vec![want], "{name}");
    }
}

#[test]
fn bad_matchers_are_each_reported() {
    assert_eq!(
        errors_of("bad-matcher.yaml"),
        vec![
            format!("{FIXTURES}/bad-matcher.yaml:8:33: alerts.matchers[1]: invalid regex \"(critical\" in matcher: unclosed group"),
            format!("{FIXTURES}/bad-matcher.yaml:8:58: alerts.matchers[2]: expected a matcher like severity=\"critical\" (label name, then = != =~ or !~, then a quoted value), found \"team\""),
        ]
    );
}

#[test]
fn empty_file_is_reported_for_the_whole_file() {
    assert_eq!(
        errors_of("empty.yaml"),
        vec![format!("{FIXTURES}/empty.yaml: file has no YAML document; expected a policy mapping with service, namespace, deployment and analysis")]
    );
    assert_eq!(
        parse_errors("# only a comment\n\n"),
        vec!["inline.yaml: file has no YAML document; expected a policy mapping with service, namespace, deployment and analysis"]
    );
}

#[test]
fn every_error_in_one_file_is_reported() {
    let f = format!("{FIXTURES}/multiple-errors.yaml");
    assert_eq!(
        errors_of("multiple-errors.yaml"),
        vec![
            format!("{f}:1:10: service: expected a Kubernetes name (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters), found \"My_App\""),
            format!("{f}:4:19: progressDeadline: expected a duration like 30s, 10m, 1h30m or 500ms, found \"10 minutes\""),
            format!("{f}:11:17: strategy.canary.steps[0].weight: weight needs traffic.type ingress-nginx or gateway-api, but traffic.type is replicas"),
            format!("{f}:13:15: strategy.canary.steps[1].size: size 20% is smaller than the previous size 50% (steps[0]); sizes must not shrink"),
            format!("{f}:17:10: analysis.prometheus.url: expected an http:// or https:// URL, found \"prometheus:9090\""),
            format!("{f}:18:10: analysis.alpha: alpha must be above 0 and below 0.5, found 0.7"),
            format!("{f}:20:7: analysis.metrics[0].total: missing required field total (the request-count query, needed by kind errors)"),
            format!("{f}:22:15: analysis.metrics[0].errors: unknown variable {{{{pods}}}}; known: namespace, service, deployment, role, podRegex, window"),
        ]
    );
}

#[test]
fn the_issue_example_reports_unknown_keys_and_values_together() {
    let src = "service: myapp
namespace: test
deployment: myapp-deploy
foo: 1
analysis:
  prometheus:
    url: http://p:9090
  intervall: 1m
  alpha: 0.7
strategy:
  canary:
    steps:
      - size: 2
        observe: 10 minutes
";
    assert_eq!(
        parse_errors(src),
        vec![
            "inline.yaml:4:1: foo: unknown field \"foo\"; expected one of: service, namespace, deployment, progressDeadline, baseline, traffic, strategy, analysis, alerts, notifications",
            "inline.yaml:8:3: analysis.intervall: unknown field \"intervall\" (did you mean \"interval\"?); expected one of: prometheus, interval, maxDuration, alpha, onNoData, minRequestsPerStep, mode, classic, metrics",
            "inline.yaml:9:10: analysis.alpha: alpha must be above 0 and below 0.5, found 0.7",
            "inline.yaml:14:18: strategy.canary.steps[0].observe: expected a duration like 30s, 10m, 1h30m or 500ms, found \"10 minutes\"",
        ]
    );
}

#[test]
fn every_error_fixture_reports_each_problem_in_document_order() {
    let f = format!("{FIXTURES}/every-error.yaml");
    assert_eq!(
        errors_of("every-error.yaml"),
        vec![
            format!("{f}:4:1: foo: unknown field \"foo\"; expected one of: service, namespace, deployment, progressDeadline, baseline, traffic, strategy, analysis, alerts, notifications"),
            format!("{f}:8:3: analysis.intervall: unknown field \"intervall\" (did you mean \"interval\"?); expected one of: prometheus, interval, maxDuration, alpha, onNoData, minRequestsPerStep, mode, classic, metrics"),
            format!("{f}:9:10: analysis.alpha: alpha must be above 0 and below 0.5, found 0.7"),
            format!("{f}:14:7: analysis.metrics[0].treshold: unknown field \"treshold\"; expected one of: name, kind, errors, total, buckets, query, direction, critical, minEffect, weight, bounds"),
            format!("{f}:15:18: analysis.metrics[0].minEffect: expected a number, found \"high\""),
            format!("{f}:20:18: strategy.canary.steps[0].observe: expected a duration like 30s, 10m, 1h30m or 500ms, found \"10 minutes\""),
            format!("{f}:21:9: strategy.canary.steps[0].pauze: unknown field \"pauze\"; expected one of: size, weight, observe, gate"),
            format!("{f}:24:15: strategy.canary.steps[1].gate: expected true or false, found \"maybe\""),
            format!("{f}:26:13: alerts.matchers: expected a list, found \"severity=\\\"critical\\\"\""),
            format!("{f}:30:5: notifications[0].channel: unknown field \"channel\"; expected one of: type, url"),
        ]
    );
}

#[test]
fn wrong_kinds_are_reported_once_and_siblings_still_checked() {
    let with = |extra: &str| format!("{MINIMAL}{extra}");
    // A value of the wrong kind is not also reported as missing or empty.
    assert_eq!(
        parse_errors("service: a\nnamespace: b\ndeployment: c\nanalysis: [1]\n"),
        vec!["inline.yaml:4:11: analysis: expected a mapping, found a sequence"]
    );
    assert_eq!(
        parse_errors(&with("    basicAuth: {username: [u], passwordFile: /p}\n")),
        vec!["inline.yaml:7:27: analysis.prometheus.basicAuth.username: expected a string, found a sequence"]
    );
    assert_eq!(
        parse_errors(&with("strategy:\n  canary: 3\n")),
        vec!["inline.yaml:8:11: strategy.canary: expected a mapping, found \"3\""]
    );
    // Items keep their index when an earlier item has the wrong kind.
    assert_eq!(
        parse_errors(&with("strategy:\n  canary:\n    steps:\n      - 3\n      - {size: 2, observe: 10 minutes}\n")),
        vec![
            "inline.yaml:10:9: strategy.canary.steps[0]: expected a mapping, found \"3\"",
            "inline.yaml:11:28: strategy.canary.steps[1].observe: expected a duration like 30s, 10m, 1h30m or 500ms, found \"10 minutes\"",
        ]
    );
    assert_eq!(
        parse_errors(&with("alerts:\n  matchers: [~, 'team=\"a', {a: 1}]\n  guardWindow: {a: 1}\n")),
        vec![
            "inline.yaml:8:14: alerts.matchers[0]: expected a string, found nothing",
            "inline.yaml:8:17: alerts.matchers[1]: expected a matcher like severity=\"critical\" (label name, then = != =~ or !~, then a quoted value), found \"team=\\\"a\"",
            "inline.yaml:8:28: alerts.matchers[2]: expected a string, found a mapping",
            "inline.yaml:9:16: alerts.guardWindow: expected a duration like 30s, 10m, 1h30m or 500ms, found a mapping",
        ]
    );
    // Numbers the YAML reader cannot represent finitely reach the validator.
    assert_eq!(
        parse_errors(&with("  alpha: .inf\n")),
        vec!["inline.yaml:7:10: analysis.alpha: expected a finite number, found inf"]
    );
    // Repeated and non-text keys are reported next to everything else.
    assert_eq!(
        parse_errors(&with("namespace: other\n? [a]\n: b\nbaseline: {a: 1}\n")),
        vec![
            "inline.yaml:7:1: namespace: duplicate key \"namespace\"; each key may appear once",
            "inline.yaml:8:3: expected a field name, found a sequence",
            "inline.yaml:10:11: baseline: expected a string, found a mapping",
        ]
    );
}

#[test]
fn scalars_read_as_names_keep_their_written_text() {
    let src = MINIMAL
        .replace("namespace: test", "namespace: yes")
        .replace("deployment: myapp-deploy", "deployment: 1.50");
    let p = policy::parse_str(&src, Path::new("inline.yaml")).unwrap();
    assert_eq!(
        (p.namespace.as_str(), p.deployment.as_str()),
        ("yes", "1.50")
    );
    let gate = format!(
        "{MINIMAL}strategy:\n  canary:\n    steps:\n      - {{size: 1, observe: 2m, gate: \"true\"}}\n"
    );
    let p = policy::parse_str(&gate, Path::new("inline.yaml")).unwrap();
    let Strategy::Canary(c) = &p.strategy else {
        panic!("canary expected");
    };
    assert!(c.steps[0].gate);
}

/// A valid policy with a mapping at every level.
const LEVELS: &str = "service: myapp
namespace: test
deployment: myapp-deploy
traffic:
  type: ingress-nginx
  ingress: myapp
strategy:
  canary:
    steps:
      - size: 1
        weight: 10
        observe: 2m
analysis:
  prometheus:
    url: http://prometheus:9090
    basicAuth:
      username: u
      passwordFile: /p
  mode: classic
  classic:
    passScore: 90
  metrics:
    - name: cpu
      kind: gauge
      query: 'avg(cpu{pod=~\"{{podRegex}}\"}[{{window}}])'
      bounds:
        max: 0.9
alerts:
  guardWindow: 5m
notifications:
  - type: slack
    url: https://hooks.example.com/x
";
/// Where an extra key can go in [`LEVELS`], one per mapping (the top level
/// twice): (insert after this 0-based line, indentation), in line order.
const SLOTS: [(usize, usize); 14] = [
    (0, 0),  // top level
    (1, 0),  // top level again
    (4, 2),  // traffic
    (6, 2),  // strategy
    (7, 4),  // strategy.canary
    (11, 8), // strategy.canary.steps[0]
    (14, 4), // analysis.prometheus
    (17, 6), // analysis.prometheus.basicAuth
    (18, 2), // analysis
    (20, 4), // analysis.classic
    (24, 6), // analysis.metrics[0]
    (26, 8), // analysis.metrics[0].bounds
    (28, 2), // alerts
    (31, 4), // notifications[0]
];

proptest::proptest! {
    #[test]
    fn each_unknown_key_at_any_level_is_one_error(
        slots in proptest::sample::subsequence((0..SLOTS.len()).collect::<Vec<_>>(), 0..=SLOTS.len()),
        names in proptest::collection::vec("x[a-z]{0,6}", SLOTS.len()),
    ) {
        let mut lines: Vec<String> = LEVELS.lines().map(str::to_owned).collect();
        // Insert from the bottom so earlier line numbers stay valid.
        for &s in slots.iter().rev() {
            let (after, indent) = SLOTS[s];
            lines.insert(after + 1, format!("{}{}: 1", " ".repeat(indent), names[s]));
        }
        let src = lines.join("\n");
        let result = policy::parse_str(&src, Path::new("levels.yaml"));
        if slots.is_empty() {
            proptest::prop_assert!(result.is_ok(), "{:?}", result);
            return Ok(());
        }
        let errors = match result {
            Ok(p) => return Err(proptest::test_runner::TestCaseError::fail(format!("valid: {p:?}"))),
            Err(e) => e,
        };
        proptest::prop_assert_eq!(errors.len(), slots.len(), "{}\n---\n{}", errors, src);
        // In document order: the k-th inserted key is below its slot line and
        // the k keys inserted above it.
        for (k, (e, &s)) in errors.iter().zip(&slots).enumerate() {
            let (after, indent) = SLOTS[s];
            proptest::prop_assert_eq!((e.line, e.column), (after + 2 + k, indent + 1), "{}", e);
            proptest::prop_assert!(e.path.ends_with(&names[s]), "{}", e);
            let unknown = format!("unknown field {:?}", names[s]);
            proptest::prop_assert!(e.message.starts_with(&unknown), "{}", e);
        }
    }
}

#[test]
fn too_large_files_are_rejected_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let mut text = MINIMAL.to_owned();
    text.push_str(&"#".repeat(1024 * 1024));
    std::fs::write(&path, &text).unwrap();
    let err = policy::load_file(&path).unwrap_err();
    assert_eq!(
        lines(&err),
        vec![format!(
            "{}: file is {} bytes; policy files are limited to 1048576 bytes (1 MiB)",
            path.display(),
            text.len()
        )]
    );
}

#[test]
fn missing_files_and_empty_directories_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let err = policy::load_paths(&[missing.clone(), dir.path().to_path_buf()]).unwrap_err();
    let got = lines(&err);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[0],
        format!(
            "{}: no policy files (*.yaml, *.yml) in this directory",
            dir.path().display()
        )
    );
    assert!(
        got[1].starts_with(&format!("{}: cannot read file: ", missing.display())),
        "{}",
        got[1]
    );
}

#[test]
fn a_second_policy_for_the_same_deployment_names_the_first() {
    let err = policy::load_paths(&[fixture("duplicate")]).unwrap_err();
    assert_eq!(
        lines(&err),
        vec![format!("{FIXTURES}/duplicate/b.yaml:3:13: deployment: Deployment test/myapp-deploy already has a policy in {FIXTURES}/duplicate/a.yaml; expected one policy per Deployment")]
    );
}

#[test]
fn directories_load_yaml_and_yml_sorted_and_skip_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, ns: &str| {
        std::fs::write(dir.path().join(name), MINIMAL.replace("test", ns)).unwrap();
    };
    write("b.yml", "b");
    write("a.yaml", "a");
    std::fs::write(dir.path().join("notes.txt"), "not a policy").unwrap();
    let policies = policy::load_paths(&[dir.path().to_path_buf()]).unwrap();
    let namespaces: Vec<&str> = policies.iter().map(|p| p.namespace.as_str()).collect();
    assert_eq!(namespaces, ["a", "b"]);
    // Naming a file of the directory again does not make it a duplicate.
    let again = policy::load_paths(&[dir.path().to_path_buf(), dir.path().join("a.yaml")]).unwrap();
    assert_eq!(again.len(), 2);
}

#[test]
fn structural_errors_name_the_field() {
    let with = |extra: &str| format!("{MINIMAL}{extra}");
    assert_eq!(
        parse_errors(&with("traffic: replicas\n")),
        vec!["inline.yaml:7:10: traffic: expected a mapping, found \"replicas\""]
    );
    assert_eq!(
        parse_errors(&with("namespace: other\n")),
        vec!["inline.yaml:7:1: namespace: duplicate key \"namespace\"; each key may appear once"]
    );
    assert_eq!(
        parse_errors(&with("---\nservice: x\n")),
        vec!["inline.yaml:8:1: expected one YAML document per policy file, found several"]
    );
    assert_eq!(
        parse_errors(&with("strategy:\n  canary:\n    steps:\n      - size: 1\n        observe: 2m\n        gate: maybe\n")),
        vec!["inline.yaml:12:15: strategy.canary.steps[0].gate: expected true or false, found \"maybe\""]
    );
    assert_eq!(
        parse_errors(&with("servce: x\n")),
        vec!["inline.yaml:7:1: servce: unknown field \"servce\" (did you mean \"service\"?); expected one of: service, namespace, deployment, progressDeadline, baseline, traffic, strategy, analysis, alerts, notifications"]
    );
}

#[test]
fn semantic_errors_across_sections() {
    let with = |extra: &str| format!("{MINIMAL}{extra}");
    assert_eq!(
        parse_errors("service: myapp\nnamespace: test\ndeployment: d\n"),
        vec![
            "inline.yaml:1:1: analysis: missing required field analysis (at least prometheus.url)"
        ]
    );
    assert_eq!(
        parse_errors(&with("traffic:\n  type: ingress-nginx\n")),
        vec!["inline.yaml:8:3: traffic.ingress: missing required field ingress (the Ingress to split, needed by type ingress-nginx)"]
    );
    assert_eq!(
        parse_errors(&with("traffic:\n  type: istio\n")),
        vec!["inline.yaml:8:9: traffic.type: expected replicas, ingress-nginx or gateway-api, found \"istio\""]
    );
    assert_eq!(
        parse_errors(&with("  maxDuration: 10m\n")),
        vec!["inline.yaml:7:16: analysis.maxDuration: maxDuration 10m is shorter than the 16m the strategy observes in total"]
    );
    assert_eq!(
        parse_errors(&with("  interval: 1s\n")),
        vec!["inline.yaml:7:13: analysis.interval: interval must be at least 5s, found 1s"]
    );
    assert_eq!(
        parse_errors(&with("  mode: classic\n  classic: {passScore: 70, marginalScore: 80}\n")),
        vec!["inline.yaml:8:43: analysis.classic.marginalScore: marginalScore 80 must not be above passScore 70"]
    );
    assert_eq!(
        parse_errors(&with("    bearerTokenFile: /t\n    basicAuth: {username: u, passwordFile: /p}\n")),
        vec!["inline.yaml:8:16: analysis.prometheus.basicAuth: expected bearerTokenFile or basicAuth, found both"]
    );
    assert_eq!(
        parse_errors(&with("  metrics:\n    - name: m\n      kind: gauge\n      query: 'up{pod=~\"{{podRegex}}\"}'\n      total: 'x'\n      bounds: {min: 2, max: 1}\n")),
        vec![
            "inline.yaml:11:14: analysis.metrics[0].total: total is not used by kind gauge; remove it or change the kind",
            "inline.yaml:12:21: analysis.metrics[0].bounds.min: min 2 must not be above max 1",
        ]
    );
    assert_eq!(
        parse_errors(&with("traffic:\n  type: gateway-api\n  httpRoute: r\nstrategy:\n  canary:\n    steps:\n      - {size: 2, weight: 10, observe: 2m}\n      - {size: 2, weight: 10, observe: 2m}\n")),
        vec!["inline.yaml:14:27: strategy.canary.steps[1].weight: weight 10 does not grow: the previous weight is also 10 (steps[0]); each step must grow the size or the weight"]
    );
    assert_eq!(
        parse_errors(&with("notifications:\n  - type: email\n    url: ftp://x\n")),
        vec![
            "inline.yaml:8:11: notifications[0].type: expected slack or webhook, found \"email\"",
            "inline.yaml:9:10: notifications[0].url: expected an http:// or https:// URL, found \"ftp://x\"",
        ]
    );
}

#[test]
fn omitted_fields_take_their_documented_defaults() {
    let p = policy::parse_str(MINIMAL, Path::new("minimal.yaml")).unwrap();
    assert_eq!(p.source, Path::new("minimal.yaml"));
    assert_eq!(p.progress_deadline, Duration::from_secs(600));
    assert_eq!(p.baseline, BaselineMode::Fresh);
    assert_eq!(p.traffic, Traffic::Replicas);
    let Strategy::Canary(c) = &p.strategy else {
        panic!("default strategy is canary");
    };
    let plan: Vec<(Option<CanarySize>, u64)> = c
        .steps
        .iter()
        .map(|s| (s.size, s.observe.as_secs()))
        .collect();
    assert_eq!(
        plan,
        [
            (Some(CanarySize::Replicas(1)), 600),
            (Some(CanarySize::Percent(10.0)), 120),
            (Some(CanarySize::Percent(50.0)), 120),
            (Some(CanarySize::Percent(100.0)), 120),
        ]
    );
    assert_eq!(p.analysis.interval, Duration::from_secs(60));
    assert_eq!(p.analysis.max_duration, Duration::from_secs(3 * 960));
    assert_eq!(p.analysis.alpha, 0.05);
    assert_eq!(p.analysis.on_no_data, OnNoData::Hold);
    assert_eq!(
        p.analysis.min_requests_per_step,
        policy::DEFAULT_MIN_REQUESTS_PER_STEP
    );
    assert_ne!(policy::DEFAULT_MIN_REQUESTS_PER_STEP, 0);
    assert_eq!(p.analysis.mode, JudgeMode::Sequential);
    assert_eq!(p.analysis.metrics, policy::default_metrics());
    assert!(p.alerts.matchers.is_empty());
    assert_eq!(p.alerts.guard_window, Duration::from_secs(600));
    assert!(p.notifications.is_empty());
}

#[test]
fn blue_green_compares_with_the_stable_pods_by_default() {
    let bg =
        format!("{MINIMAL}strategy:\n  blueGreen:\n    activeService: myapp\n    observe: 2m\n");
    let p = policy::parse_str(&bg, Path::new("bg.yaml")).unwrap();
    assert_eq!(
        p.baseline,
        BaselineMode::Stable,
        "blue-green has no baseline pods"
    );
    let explicit = format!("{bg}baseline: stable\n");
    let p = policy::parse_str(&explicit, Path::new("bg.yaml")).unwrap();
    assert_eq!(p.baseline, BaselineMode::Stable);
    assert_eq!(
        parse_errors(&format!("{bg}baseline: fresh\n")),
        vec!["inline.yaml:11:11: baseline: blue-green creates no baseline pods; use stable (the default for blue-green)"]
    );
}

#[test]
fn example_policies_all_validate() {
    let mut seen = 0;
    for entry in std::fs::read_dir("policies").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            if let Err(e) = policy::load_file(&path) {
                panic!("{} does not validate:\n{e}", path.display());
            }
            seen += 1;
        }
    }
    assert!(
        seen >= 3,
        "expected at least 3 example policies, found {seen}"
    );
}

#[test]
fn example_policies_say_what_the_docs_say() {
    let myapp = policy::load_file(Path::new("policies/myapp.yaml")).unwrap();
    assert_eq!(
        (myapp.namespace.as_str(), myapp.deployment.as_str()),
        ("test", "myapp-deploy")
    );
    assert_eq!(myapp.traffic, Traffic::Replicas);
    let Strategy::Canary(c) = &myapp.strategy else {
        panic!("myapp is a canary");
    };
    let sizes: Vec<_> = c
        .steps
        .iter()
        .map(|s| (s.size, s.observe.as_secs()))
        .collect();
    assert_eq!(
        sizes,
        [
            (Some(CanarySize::Replicas(1)), 600),
            (Some(CanarySize::Percent(10.0)), 120),
            (Some(CanarySize::Percent(50.0)), 120),
            (Some(CanarySize::Percent(100.0)), 120),
        ]
    );
    assert_eq!(myapp.alerts.matchers[1].op, MatchOp::Re);

    let lan = policy::load_file(Path::new("policies/myapp-lan.yaml")).unwrap();
    assert_eq!(
        (lan.namespace.as_str(), lan.deployment.as_str()),
        ("blue-green", "myapp-lan")
    );
    let Strategy::BlueGreen(bg) = &lan.strategy else {
        panic!("myapp-lan is blue-green");
    };
    assert_eq!(bg.active_service, "myapp-lan");
    assert_eq!(bg.version_label, "version");

    let shop = policy::load_file(Path::new("policies/shop.yaml")).unwrap();
    assert_eq!(
        shop.traffic,
        Traffic::IngressNginx {
            ingress: "shop".into()
        }
    );
    let Strategy::Canary(c) = &shop.strategy else {
        panic!("shop is a canary");
    };
    let weights: Vec<_> = c.steps.iter().map(|s| s.weight).collect();
    assert_eq!(weights, [Some(5), Some(10), Some(20), Some(50), Some(90)]);
    assert_eq!(c.steps[1].size, None);
    assert!(c.steps[3].gate);
    assert_eq!(
        shop.analysis.prometheus.auth,
        Some(PrometheusAuth::BearerTokenFile(
            "/var/run/secrets/prometheus/token".into()
        ))
    );
}

fn canaryd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_passes_the_example_policies() {
    let (code, stdout, stderr) = canaryd(&["check", "policies/"]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(
        stdout,
        "3 policies OK: myapp-lan (blue-green), myapp (canary, 4 steps), shop (ingress-nginx canary, 5 steps)\n"
    );
}

#[test]
fn check_reports_a_broken_file_and_fails() {
    let file = format!("{FIXTURES}/unknown-variable.yaml");
    let (code, stdout, stderr) = canaryd(&["check", &file]);
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!("{file}:11:14: analysis.metrics[0].total: unknown variable {{{{pods}}}}; known: namespace, service, deployment, role, podRegex, window\n")
    );
}

#[test]
fn check_prints_every_error_of_every_file() {
    let a = format!("{FIXTURES}/multiple-errors.yaml");
    let b = format!("{FIXTURES}/bad-duration.yaml");
    let (code, _, stderr) = canaryd(&["check", &a, &b, "policies"]);
    assert_eq!(code, 1);
    let got: Vec<&str> = stderr.lines().collect();
    assert_eq!(got.len(), 9, "{stderr}");
    assert!(got[..8].iter().all(|l| l.starts_with(&format!("{a}:"))));
    assert!(got[8].starts_with(&format!("{b}:8:18: ")));
}

#[test]
fn min_requests_per_step_is_a_whole_number_and_needs_a_counting_metric() {
    let with = |v: &str| format!("{MINIMAL}  minRequestsPerStep: {v}\n");
    let p = policy::parse_str(&with("0"), Path::new("inline.yaml")).unwrap();
    assert_eq!(p.analysis.min_requests_per_step, 0);
    let p = policy::parse_str(&with("500"), Path::new("inline.yaml")).unwrap();
    assert_eq!(p.analysis.min_requests_per_step, 500);
    for bad in ["-1", "2.5", "lots"] {
        let errors = parse_errors(&with(bad));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("inline.yaml:7:23: analysis.minRequestsPerStep: "),
            "{errors:?}"
        );
    }
    let gauges = "  metrics:
    - name: cpu
      kind: gauge
      query: 'avg(cpu{pod=~\"{{podRegex}}\"})'
";
    let p = policy::parse_str(&format!("{MINIMAL}{gauges}"), Path::new("inline.yaml")).unwrap();
    assert_eq!(p.analysis.min_requests_per_step, 0);
    let errors = parse_errors(&format!("{MINIMAL}  minRequestsPerStep: 10\n{gauges}"));
    assert_eq!(
        errors,
        vec!["inline.yaml:7:23: analysis.minRequestsPerStep: only errors and latency metrics count requests, and this policy has gauges only; set 0"]
    );
}

#[test]
fn names_too_long_once_canaryd_appends_its_suffixes_are_refused_at_load() {
    // Valid subdomains of `n` characters: "ddddddddd.dddd…".
    let name = |n: usize| -> String {
        (0..n)
            .map(|i| if i % 10 == 9 && i + 1 < n { '.' } else { 'd' })
            .collect()
    };
    let long = name(234);
    let src = MINIMAL.replace("deployment: myapp-deploy", &format!("deployment: {long}"));
    assert_eq!(
        parse_errors(&src),
        vec!["inline.yaml:3:13: deployment: name is 234 characters; canaryd's <deployment>-baseline-<template hash> would be 254, above the 253 Kubernetes allows; use at most 233"]
    );
    let ok = MINIMAL.replace(
        "deployment: myapp-deploy",
        &format!("deployment: {}", name(233)),
    );
    assert!(policy::parse_str(&ok, Path::new("inline.yaml")).is_ok());
    let ingress = format!(
        "{MINIMAL}traffic:\n  type: ingress-nginx\n  ingress: {}\nstrategy:\n  canary:\n    steps:\n      - {{size: 1, weight: 10, observe: 2m}}\n",
        name(247)
    );
    assert_eq!(
        parse_errors(&ingress),
        vec!["inline.yaml:9:12: traffic.ingress: name is 247 characters; canaryd's <ingress>-canary would be 254, above the 253 Kubernetes allows; use at most 246"]
    );
}

/// Metrics whose worst-case rollout state would not fit in its annotation
/// are refused at load, and so are overlong metric names.
#[test]
fn metrics_are_bounded_by_the_state_annotation() {
    let latency = |i: usize| {
        format!(
            "    - name: latency-{i}\n      kind: latency\n      buckets: 'sum by (le) (rate(h_bucket{{pod=~\"{{{{podRegex}}}}\"}}[{{{{window}}}}]))'\n"
        )
    };
    let metrics = |n: usize| -> String {
        let mut text = format!("{MINIMAL}  metrics:\n");
        for i in 0..n {
            text.push_str(&latency(i));
        }
        text
    };
    let fits = metrics(3);
    policy::parse_str(&fits, Path::new("inline.yaml")).expect("three latency metrics fit");
    let errors = parse_errors(&metrics(4));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("inline.yaml:8:5: analysis.metrics: 4 metrics (4 latency) could make the rollout state ")
            && errors[0].ends_with(" bytes, above the 65536 canaryd stores in its annotation; use fewer metrics (a latency metric takes about 4 times an errors or gauge metric)"),
        "{errors:?}"
    );

    let long = "n".repeat(64);
    assert_eq!(
        parse_errors(&format!(
            "{MINIMAL}  metrics:\n    - name: {long}\n      kind: gauge\n      query: 'up{{pod=~\"{{{{podRegex}}}}\"}}'\n"
        )),
        vec!["inline.yaml:8:13: analysis.metrics[0].name: name is 64 bytes; use at most 63"]
    );
}
