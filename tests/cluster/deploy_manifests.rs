//! `deploy/` renders with kustomize and every object passes the real API
//! server's validation (server-side dry run), including the policies ConfigMap.

use std::io::Write;
use std::process::{Command, Stdio};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test, which starts the sandbox")
    })
}

fn kubectl(args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut child = Command::new(env("CANARYD_KUBECTL"))
        .args(args)
        .env("KUBECONFIG", env("CANARYD_KUBECONFIG"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write to kubectl");
    }
    let out = child.wait_with_output().expect("wait for kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn deploy_manifests_render_and_pass_server_side_validation() {
    let root = env!("CARGO_MANIFEST_DIR");
    let deploy = format!("{root}/deploy");
    let (ok, rendered) = kubectl(
        &[
            "kustomize",
            "--load-restrictor=LoadRestrictionsNone",
            &deploy,
        ],
        None,
    );
    assert!(ok, "kustomize failed: {rendered}");
    for policy in ["myapp.yaml", "myapp-lan.yaml", "shop.yaml"] {
        assert!(
            rendered.contains(&format!("  {policy}: |")),
            "{policy} missing"
        );
    }

    // Namespaced objects can only be dry-run into a namespace that exists.
    let (ok, out) = kubectl(
        &[
            "create",
            "namespace",
            "canaryd-system",
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        None,
    );
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&["apply", "-f", "-"], Some(out.as_bytes()));
    assert!(ok, "creating canaryd-system failed: {out}");

    let (ok, out) = kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(rendered.as_bytes()),
    );
    assert!(ok, "server-side dry run rejected deploy/: {out}");
    for object in [
        "serviceaccount/canaryd",
        "clusterrole.rbac.authorization.k8s.io/canaryd",
        "deployment.apps/canaryd",
        "service/canaryd",
        "role.rbac.authorization.k8s.io/canaryd-leader-election",
        "networkpolicy.networking.k8s.io/canaryd",
    ] {
        assert!(out.contains(object), "{object} not applied: {out}");
    }
}
