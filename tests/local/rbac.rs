//! `canaryd rbac`: the committed namespaced mode (deploy/namespaced/rbac.yaml)
//! is exactly what the subcommand prints for the repo's policies.

use std::process::Command;

fn canaryd_rbac(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .arg("rbac")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run canaryd rbac")
}

#[test]
fn committed_namespaced_rbac_is_the_subcommands_output() {
    let out = canaryd_rbac(&["--policies", "policies"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/namespaced/rbac.yaml"
    ))
    .unwrap();
    assert!(
        printed == committed,
        "deploy/namespaced/rbac.yaml is stale: regenerate it with \
         `canaryd rbac --policies policies > deploy/namespaced/rbac.yaml`"
    );
    for ns in ["test", "blue-green", "shop"] {
        assert!(
            printed.contains(&format!("  name: canaryd\n  namespace: {ns}\n")),
            "{ns}"
        );
    }
    assert!(!printed.contains("ClusterRole"));
}

#[test]
fn rbac_flags_name_the_service_account_namespace_and_lease() {
    let out = canaryd_rbac(&[
        "--policies",
        "policies/shop.yaml",
        "--service-account",
        "cd",
        "--namespace",
        "ops",
        "--lease-name",
        "lead",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("  name: canaryd-leader-election\n  namespace: ops\n"));
    assert!(printed.contains("resourceNames: [\"lead\"]"));
    assert!(printed.contains("resourceNames: [\"lead-alerts\"]"));
    assert!(printed.contains("    name: cd\n    namespace: ops\n"));
    assert!(printed.contains("  namespace: shop\n"));
    assert!(!printed.contains("  namespace: test\n"));
}

#[test]
fn rbac_refuses_invalid_policies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "service: x\n").unwrap();
    let out = canaryd_rbac(&["--policies", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(!out.stderr.is_empty());
}
