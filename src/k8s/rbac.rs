//! canaryd's RBAC: the one home of the Kubernetes access the code uses.
//!
//! [`TARGET_RULES`] is what canaryd needs in every namespace a policy names
//! (the ClusterRole `canaryd` in cluster mode, a Role per namespace in
//! namespaced mode); [`STATE_RULES`] what it needs in its own namespace for
//! the Lease and the alert record. deploy/rbac.yaml must hold exactly these
//! rules (a unit test compares them) and `canaryd rbac` renders the
//! namespaced mode from them (see docs/operations.md, RBAC).
//!
//! Pure: no I/O; the rendering is plain text so each rule keeps its reason
//! as a comment.

use std::collections::BTreeSet;
use std::fmt::Write;

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::alert_record::RECORD_SUFFIX;

/// Name of the ClusterRole (cluster mode) and of each per-namespace Role and
/// RoleBinding (namespaced mode).
pub const ROLE_NAME: &str = "canaryd";
/// Name of the Role and RoleBinding in canaryd's own namespace (Lease and
/// alert record). The name predates the alert record; kept so upgrades
/// replace the Role instead of leaving the old one behind.
pub const STATE_ROLE_NAME: &str = "canaryd-leader-election";
/// canaryd's ServiceAccount in deploy/.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "canaryd";

/// Which objects a rule is limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// Any object of the resource (always so for `create`, which has no name
    /// to check, and for list/watch across a namespace).
    Any,
    /// Only the Lease (`--lease-name`).
    Lease,
    /// Only the alert record (`<lease-name>-alerts`).
    AlertRecord,
}

/// One RBAC rule and the code that needs it.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// API groups (`""` is the core group).
    pub api_groups: &'static [&'static str],
    /// Resources.
    pub resources: &'static [&'static str],
    /// Verbs, in the order they are written.
    pub verbs: &'static [&'static str],
    /// Objects the rule is limited to.
    pub names: Names,
    /// Which code uses it (rendered as a comment).
    pub why: &'static str,
}

/// canaryd's access in every namespace a policy names.
pub const TARGET_RULES: &[Rule] = &[
    Rule {
        api_groups: &["apps"],
        resources: &["deployments"],
        verbs: &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        names: Names::Any,
        why: "Targets: watched (list, watch), observed (get), paused, promoted and restored \
              (update with resourceVersion). Canary and baseline: server-side apply (patch, \
              and create when absent), delete.",
    },
    Rule {
        api_groups: &["apps"],
        resources: &["replicasets"],
        verbs: &["list"],
        names: Names::Any,
        why: "The target's revision history (listed by its selector).",
    },
    Rule {
        api_groups: &[""],
        resources: &["services"],
        verbs: &["get", "list", "create", "patch", "delete"],
        names: Names::Any,
        why: "The <service>-canary Service of the weighted routers (get the primary, \
              server-side apply, list and delete on cleanup); the blue-green selector \
              switch (get, patch).",
    },
    Rule {
        api_groups: &["networking.k8s.io"],
        resources: &["ingresses"],
        verbs: &["get", "create", "patch", "delete"],
        names: Names::Any,
        why: "ingress-nginx: get the primary Ingress, server-side apply and delete the \
              canary Ingress.",
    },
    Rule {
        api_groups: &["gateway.networking.k8s.io"],
        resources: &["httproutes"],
        verbs: &["get", "update"],
        names: Names::Any,
        why: "Gateway API: backend weights (update with resourceVersion).",
    },
    Rule {
        api_groups: &["events.k8s.io"],
        resources: &["events"],
        verbs: &["create"],
        names: Names::Any,
        why: "An Event per rollout step (events.k8s.io/v1, always created anew).",
    },
];

/// canaryd's access in its own namespace.
pub const STATE_RULES: &[Rule] = &[
    Rule {
        api_groups: &["coordination.k8s.io"],
        resources: &["leases"],
        verbs: &["create"],
        names: Names::Any,
        why: "Leader election: the first replica creates the Lease.",
    },
    Rule {
        api_groups: &["coordination.k8s.io"],
        resources: &["leases"],
        verbs: &["get", "update"],
        names: Names::Lease,
        why: "Leader election: read, renew, take over and release the Lease.",
    },
    Rule {
        api_groups: &[""],
        resources: &["configmaps"],
        verbs: &["create"],
        names: Names::Any,
        why: "The alert record: the first webhook notification creates it.",
    },
    Rule {
        api_groups: &[""],
        resources: &["configmaps"],
        verbs: &["get", "list", "watch", "update"],
        names: Names::AlertRecord,
        why: "The alert record: read and replace with resourceVersion; watched with a \
              metadata.name field selector, which RBAC checks against resourceNames.",
    },
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Rule {
    /// The object names this rule is limited to (empty: any).
    pub fn resource_names(&self, lease_name: &str) -> Vec<String> {
        match self.names {
            Names::Any => Vec::new(),
            Names::Lease => vec![lease_name.to_string()],
            Names::AlertRecord => vec![format!("{lease_name}{RECORD_SUFFIX}")],
        }
    }

    /// The rule as the RBAC API writes it.
    pub fn policy_rule(&self, lease_name: &str) -> PolicyRule {
        let names = self.resource_names(lease_name);
        PolicyRule {
            api_groups: Some(strings(self.api_groups)),
            resources: Some(strings(self.resources)),
            verbs: strings(self.verbs),
            resource_names: (!names.is_empty()).then_some(names),
            non_resource_urls: None,
        }
    }
}

/// `rules` as the RBAC API writes them.
pub fn policy_rules(rules: &[Rule], lease_name: &str) -> Vec<PolicyRule> {
    rules.iter().map(|r| r.policy_rule(lease_name)).collect()
}

/// What the namespaced mode is rendered for.
#[derive(Debug, Clone)]
pub struct Namespaced {
    /// canaryd's ServiceAccount.
    pub service_account: String,
    /// canaryd's namespace (ServiceAccount, Lease, alert record).
    pub namespace: String,
    /// Name of the Lease (`--lease-name`).
    pub lease_name: String,
    /// The namespaces the policies name.
    pub targets: BTreeSet<String>,
}

fn flow(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

fn render_rules(out: &mut String, rules: &[Rule], lease_name: &str) {
    let _ = writeln!(out, "rules:");
    for rule in rules {
        let r = rule.policy_rule(lease_name);
        let _ = writeln!(out, "  # {}", rule.why);
        let _ = writeln!(
            out,
            "  - apiGroups: {}",
            flow(&r.api_groups.unwrap_or_default())
        );
        let _ = writeln!(
            out,
            "    resources: {}",
            flow(&r.resources.unwrap_or_default())
        );
        if let Some(names) = r.resource_names {
            let _ = writeln!(out, "    resourceNames: {}", flow(&names));
        }
        let _ = writeln!(out, "    verbs: {}", flow(&r.verbs));
    }
}

/// A Role `name` in `namespace` with `rules`, bound to canaryd's ServiceAccount.
fn render_role(out: &mut String, m: &Namespaced, name: &str, namespace: &str, rules: &[Rule]) {
    let _ = write!(
        out,
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  \
         name: {name}\n  namespace: {namespace}\n"
    );
    render_rules(out, rules, &m.lease_name);
    let _ = write!(
        out,
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  \
         name: {name}\n  namespace: {namespace}\nroleRef:\n  \
         apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: {name}\nsubjects:\n  \
         - kind: ServiceAccount\n    name: {}\n    namespace: {}\n",
        m.service_account, m.namespace
    );
}

/// The namespaced mode as YAML: the Role for the Lease and alert record in
/// canaryd's namespace, then a Role and RoleBinding with [`TARGET_RULES`] in
/// each target namespace. `source` names the policies in the header.
pub fn render_namespaced(m: &Namespaced, source: &str) -> String {
    let mut out = format!(
        "# Generated by `canaryd rbac --policies {source}`; do not edit (regenerate when \
         the policies change).\n# canaryd's namespaced RBAC: Roles in the {} namespace(s) \
         the policies name, none cluster-wide.\n",
        m.targets.len()
    );
    render_role(&mut out, m, STATE_ROLE_NAME, &m.namespace, STATE_RULES);
    for ns in &m.targets {
        render_role(&mut out, m, ROLE_NAME, ns, TARGET_RULES);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};

    const DEFAULT_LEASE: &str = crate::k8s::lease::DEFAULT_LEASE_NAME;

    fn documents(text: &str) -> Vec<serde_json::Value> {
        serde_saphyr::from_str_multiple(text).unwrap()
    }

    fn find<T: serde::de::DeserializeOwned>(
        docs: &[serde_json::Value],
        kind: &str,
        name: &str,
    ) -> T {
        let doc = docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"));
        serde_json::from_value(doc.clone()).unwrap()
    }

    #[test]
    fn deploy_rbac_holds_exactly_the_rules_of_the_table() {
        let docs = documents(include_str!("../../deploy/rbac.yaml"));
        let cluster: ClusterRole = find(&docs, "ClusterRole", ROLE_NAME);
        assert_eq!(
            cluster.rules.unwrap_or_default(),
            policy_rules(TARGET_RULES, DEFAULT_LEASE)
        );
        let state: Role = find(&docs, "Role", STATE_ROLE_NAME);
        assert_eq!(
            state.rules.unwrap_or_default(),
            policy_rules(STATE_RULES, DEFAULT_LEASE)
        );
        assert_eq!(
            docs.len(),
            5,
            "ServiceAccount, ClusterRole(Binding), Role(Binding)"
        );
    }

    #[test]
    fn no_rule_grants_secrets_pods_or_wildcards_or_deletecollection() {
        for rule in TARGET_RULES.iter().chain(STATE_RULES) {
            for r in rule.resources {
                assert!(!["secrets", "pods", "pods/exec", "*"].contains(r), "{r}");
            }
            for v in rule.verbs {
                assert!(!["*", "deletecollection", "escalate", "bind", "impersonate"].contains(v));
            }
            assert!(!rule.api_groups.contains(&"*"));
        }
    }

    #[test]
    fn create_is_never_limited_by_name() {
        // RBAC cannot check a name on create: such a rule would never match.
        for rule in TARGET_RULES.iter().chain(STATE_RULES) {
            if rule.verbs.contains(&"create") {
                assert_eq!(rule.names, Names::Any, "{:?}", rule.resources);
            }
        }
    }

    #[test]
    fn namespaced_render_parses_back_to_the_table() {
        let m = Namespaced {
            service_account: "sa".into(),
            namespace: "ops".into(),
            lease_name: "lead".into(),
            targets: BTreeSet::from(["a".to_string(), "b".to_string()]),
        };
        let docs = documents(&render_namespaced(&m, "dir"));
        assert_eq!(docs.len(), 6);
        let state: Role = find(&docs, "Role", STATE_ROLE_NAME);
        assert_eq!(state.metadata.namespace.as_deref(), Some("ops"));
        assert_eq!(
            state.rules.unwrap_or_default(),
            policy_rules(STATE_RULES, "lead")
        );
        let named: Vec<_> = policy_rules(STATE_RULES, "lead")
            .into_iter()
            .filter_map(|r| r.resource_names)
            .collect();
        assert_eq!(
            named,
            [vec!["lead".to_string()], vec!["lead-alerts".to_string()]]
        );
        for ns in ["a", "b"] {
            let role = docs
                .iter()
                .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == ns)
                .unwrap();
            let role: Role = serde_json::from_value(role.clone()).unwrap();
            assert_eq!(role.metadata.name.as_deref(), Some(ROLE_NAME));
            assert_eq!(
                role.rules.unwrap_or_default(),
                policy_rules(TARGET_RULES, "lead")
            );
            let binding = docs
                .iter()
                .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["namespace"] == ns)
                .unwrap();
            let binding: RoleBinding = serde_json::from_value(binding.clone()).unwrap();
            assert_eq!(binding.role_ref.name, ROLE_NAME);
            let subject = &binding.subjects.unwrap_or_default()[0];
            assert_eq!(
                (subject.name.as_str(), subject.namespace.as_deref()),
                ("sa", Some("ops"))
            );
        }
    }
}
