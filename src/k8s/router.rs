//! Traffic routing to the canary: an ingress-nginx canary Ingress, Gateway API
//! HTTPRoute backend weights, and the blue-green Service selector switch.
//!
//! Both weighted routers send the canary's share to a `<service>-canary`
//! Service that selects only canary pods. Objects canaryd creates are
//! server-side applied with field manager
//! [`FIELD_MANAGER`](crate::k8s::FIELD_MANAGER) and owned by the target
//! Deployment; objects it only edits (the HTTPRoute, the active Service) are
//! written with their resourceVersion as a precondition, and a conflict is
//! retried from a fresh read ([`crate::k8s::retry_on_conflict`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use crate::k8s::target::{owner_reference, Arm, ROLE_LABEL};
use crate::k8s::{self, ApiFailure, MANAGED_BY};
use crate::policy::{Policy, Traffic};
use crate::{Error, Result};

/// ingress-nginx annotation marking an Ingress as the canary of another.
pub const NGINX_CANARY: &str = "nginx.ingress.kubernetes.io/canary";
/// ingress-nginx annotation with the canary's percent of requests.
pub const NGINX_CANARY_WEIGHT: &str = "nginx.ingress.kubernetes.io/canary-weight";
/// Label on canary Services naming the target Deployment they belong to.
pub const TARGET_LABEL: &str = "canaryd.io/target";

/// Name of the Service selecting only the canary pods of `service`.
pub fn canary_service_name(service: &str) -> String {
    format!("{service}-canary")
}

/// Name of the canary Ingress of `ingress`.
pub fn canary_ingress_name(ingress: &str) -> String {
    format!("{ingress}-canary")
}

/// The Gateway API HTTPRoute resource (`gateway.networking.k8s.io/v1`).
pub fn httproute_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    ApiResource::from_gvk_with_plural(&gvk, "httproutes")
}

fn weight_error(kind: &'static str, ns: &str, name: &str) -> impl Fn(kube::Error) -> Error {
    let name = format!("{ns}/{name}");
    move |e| Error::SetWeight {
        kind,
        name: name.clone(),
        message: e.to_string(),
    }
}

/// Sets the canary's share of traffic to `percent` through the policy's
/// router (nothing to do for `replicas` traffic).
pub async fn set_weight(
    client: &Client,
    policy: &Policy,
    target: &Deployment,
    percent: u8,
) -> Result<()> {
    match &policy.traffic {
        Traffic::Replicas => Ok(()),
        Traffic::IngressNginx { ingress } => {
            set_ingress_weight(client, policy, target, ingress, percent).await
        }
        Traffic::GatewayApi { route } => {
            set_route_weight(client, policy, target, route, percent).await
        }
    }
}

/// Removes what [`set_weight`] created: the canary Ingress or the canary
/// backendRefs, and the canary Services (404 counts as success).
pub async fn remove_canary_routes(client: &Client, policy: &Policy) -> Result<()> {
    let ns = &policy.namespace;
    match &policy.traffic {
        Traffic::Replicas => return Ok(()),
        Traffic::IngressNginx { ingress } => {
            let api: Api<Ingress> = Api::namespaced(client.clone(), ns);
            let name = canary_ingress_name(ingress);
            delete_ignoring_404(&api, &name, "Ingress", ns).await?;
        }
        Traffic::GatewayApi { route } => {
            edit_route(client, ns, route, |spec| {
                unweight_route(spec);
                Ok(())
            })
            .await?;
        }
    }
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let selector = format!(
        "{ROLE_LABEL}={},{TARGET_LABEL}={}",
        Arm::Canary.as_str(),
        policy.deployment
    );
    let owned = services
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::DeleteObject {
            kind: "Service",
            name: format!("{ns}/{selector}"),
            source: Box::new(source),
        })?;
    for svc in owned {
        delete_ignoring_404(&services, &svc.name_any(), "Service", ns).await?;
    }
    Ok(())
}

async fn delete_ignoring_404<K>(
    api: &Api<K>,
    name: &str,
    kind: &'static str,
    ns: &str,
) -> Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if ApiFailure::of(&e) == ApiFailure::NotFound => Ok(()),
        Err(source) => Err(Error::DeleteObject {
            kind,
            name: format!("{ns}/{name}"),
            source: Box::new(source),
        }),
    }
}

/// Labels of the canary objects canaryd creates for `target`.
fn canary_labels(target: &Deployment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ROLE_LABEL.to_string(), Arm::Canary.as_str().to_string()),
        (TARGET_LABEL.to_string(), target.name_any()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
    ])
}

/// The `<service>-canary` Service: the primary's ports, its selector plus the
/// canary role label, owned by the target (pure).
pub fn canary_service(primary: &Service, target: &Deployment) -> Service {
    let spec = primary.spec.clone().unwrap_or_default();
    let mut selector = spec.selector.clone().unwrap_or_default();
    selector.insert(ROLE_LABEL.to_string(), Arm::Canary.as_str().to_string());
    let ports = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| ServicePort {
            node_port: None,
            ..p
        });
    Service {
        metadata: ObjectMeta {
            name: Some(canary_service_name(&primary.name_any())),
            namespace: primary.metadata.namespace.clone(),
            labels: Some(canary_labels(target)),
            owner_references: Some(vec![owner_reference(target)]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(ports.collect()),
            type_: Some("ClusterIP".to_string()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

async fn ensure_canary_service(
    client: &Client,
    ns: &str,
    service: &str,
    target: &Deployment,
    kind: &'static str,
) -> Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let err = weight_error(kind, ns, service);
    let primary = api.get(service).await.map_err(&err)?;
    let desired = canary_service(&primary, target);
    apply_owned(&api, ns, "Service", target, &desired, &err).await
}

/// Server-side applies `desired`, preconditioned on the resourceVersion
/// read, unless an object of its name already belongs to another target
/// (`ForeignObject`).
async fn apply_owned<K>(
    api: &Api<K>,
    ns: &str,
    kind: &'static str,
    target: &Deployment,
    desired: &K,
    err: impl Fn(kube::Error) -> Error,
) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = desired.name_any();
    let full = format!("{ns}/{name}");
    let check = |existing: &K| {
        if existing.labels().get(TARGET_LABEL) == Some(&target.name_any()) {
            Ok(())
        } else {
            Err(Error::ForeignObject {
                kind,
                name: full.clone(),
            })
        }
    };
    k8s::apply_preconditioned(api, &full, desired, check, err).await?;
    Ok(())
}

fn backend_services(spec: &IngressSpec) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut add = |b: &IngressBackend| {
        if let Some(s) = &b.service {
            names.insert(s.name.clone());
        }
    };
    if let Some(b) = &spec.default_backend {
        add(b);
    }
    for rule in spec.rules.iter().flatten() {
        for path in rule.http.iter().flat_map(|h| h.paths.iter()) {
            add(&path.backend);
        }
    }
    names
}

/// The canary Ingress of `primary`: its rules pointed at the canary Services,
/// with the ingress-nginx canary annotations (pure).
pub fn canary_ingress(primary: &Ingress, target: &Deployment, percent: u8) -> Ingress {
    let mut spec = primary.spec.clone().unwrap_or_default();
    let rename = |b: &mut IngressBackend| {
        if let Some(s) = b.service.as_mut() {
            s.name = canary_service_name(&s.name);
        }
    };
    if let Some(b) = spec.default_backend.as_mut() {
        rename(b);
    }
    for rule in spec.rules.iter_mut().flatten() {
        for path in rule.http.iter_mut().flat_map(|h| h.paths.iter_mut()) {
            rename(&mut path.backend);
        }
    }
    // TLS stays with the primary; ingress-nginx routes canary requests of
    // the same host through it.
    spec.tls = None;
    Ingress {
        metadata: ObjectMeta {
            name: Some(canary_ingress_name(&primary.name_any())),
            namespace: primary.metadata.namespace.clone(),
            labels: Some(canary_labels(target)),
            annotations: Some(BTreeMap::from([
                (NGINX_CANARY.to_string(), "true".to_string()),
                (NGINX_CANARY_WEIGHT.to_string(), percent.to_string()),
            ])),
            owner_references: Some(vec![owner_reference(target)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

async fn set_ingress_weight(
    client: &Client,
    policy: &Policy,
    target: &Deployment,
    ingress: &str,
    percent: u8,
) -> Result<()> {
    let ns = &policy.namespace;
    let api: Api<Ingress> = Api::namespaced(client.clone(), ns);
    let err = weight_error("Ingress", ns, ingress);
    let primary = api.get(ingress).await.map_err(&err)?;
    for service in backend_services(&primary.spec.clone().unwrap_or_default()) {
        ensure_canary_service(client, ns, &service, target, "Ingress").await?;
    }
    let desired = canary_ingress(&primary, target, percent);
    apply_owned(&api, ns, "Ingress", target, &desired, &err).await
}

fn is_service_ref(r: &Value) -> bool {
    let kind_ok = r
        .get("kind")
        .and_then(Value::as_str)
        .is_none_or(|k| k == "Service");
    let group_ok = r
        .get("group")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    kind_ok && group_ok
}

fn ref_name(r: &Value) -> &str {
    r.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// Weights every rule of an HTTPRoute spec: the first Service backendRef that
/// is not a canary gets `100 - percent`, its `-canary` twin (added when
/// missing, same port) gets `percent`. Returns the primary Service names.
pub fn weight_route(spec: &mut Value, percent: u8) -> BTreeSet<String> {
    let mut primaries = BTreeSet::new();
    let Some(rules) = spec.get_mut("rules").and_then(Value::as_array_mut) else {
        return primaries;
    };
    for rule in rules {
        let Some(refs) = rule.get_mut("backendRefs").and_then(Value::as_array_mut) else {
            continue;
        };
        let names: BTreeSet<String> = refs.iter().map(|r| ref_name(r).to_string()).collect();
        let Some(index) = refs.iter().position(|r| {
            is_service_ref(r) && !names.iter().any(|n| canary_service_name(n) == ref_name(r))
        }) else {
            continue;
        };
        let primary = ref_name(&refs[index]).to_string();
        let canary = canary_service_name(&primary);
        refs[index]["weight"] = json!(100 - u32::from(percent.min(100)));
        match refs.iter_mut().find(|r| ref_name(r) == canary) {
            Some(r) => r["weight"] = json!(percent),
            None => {
                let mut twin = refs[index].clone();
                twin["name"] = json!(canary);
                twin["weight"] = json!(percent);
                refs.push(twin);
            }
        }
        primaries.insert(primary);
    }
    primaries
}

/// Removes the canary backendRefs [`weight_route`] added; the primary keeps
/// all traffic (weight 100).
pub fn unweight_route(spec: &mut Value) {
    let Some(rules) = spec.get_mut("rules").and_then(Value::as_array_mut) else {
        return;
    };
    for rule in rules {
        let Some(refs) = rule.get_mut("backendRefs").and_then(Value::as_array_mut) else {
            continue;
        };
        let names: BTreeSet<String> = refs.iter().map(|r| ref_name(r).to_string()).collect();
        let canaries: BTreeSet<String> = names.iter().map(|n| canary_service_name(n)).collect();
        refs.retain(|r| !(is_service_ref(r) && canaries.contains(ref_name(r))));
        for r in refs.iter_mut().filter(|r| is_service_ref(r)) {
            if r.get("weight").is_some() {
                r["weight"] = json!(100);
            }
        }
    }
}

/// Read-modify-write of an HTTPRoute's spec with its resourceVersion as the
/// precondition; conflicts are retried from a fresh read (bounded).
async fn edit_route<F>(client: &Client, ns: &str, route: &str, mut change: F) -> Result<Value>
where
    F: FnMut(&mut Value) -> Result<()>,
{
    let ar = httproute_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let err = weight_error("HTTPRoute", ns, route);
    let full = format!("{ns}/{route}");
    let mut retry = k8s::ConflictRetry::new(&full);
    loop {
        retry.attempt()?;
        let mut obj = api.get(route).await.map_err(&err)?;
        let before = obj.data.get("spec").cloned().unwrap_or(Value::Null);
        let mut spec = before.clone();
        change(&mut spec)?;
        if spec == before {
            return Ok(spec);
        }
        obj.data["spec"] = spec.clone();
        match api.replace(route, &k8s::post_params(), &obj).await {
            Ok(_) => return Ok(spec),
            Err(e) if ApiFailure::of(&e) == ApiFailure::Conflict => continue,
            Err(e) => return Err(err(e)),
        }
    }
}

async fn set_route_weight(
    client: &Client,
    policy: &Policy,
    target: &Deployment,
    route: &str,
    percent: u8,
) -> Result<()> {
    let ns = &policy.namespace;
    // The canary Service must exist before the route points at it.
    let ar = httproute_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let current = api
        .get(route)
        .await
        .map_err(weight_error("HTTPRoute", ns, route))?;
    let mut probe = current.data.get("spec").cloned().unwrap_or(Value::Null);
    for service in weight_route(&mut probe, percent) {
        ensure_canary_service(client, ns, &service, target, "HTTPRoute").await?;
    }
    edit_route(client, ns, route, |spec| {
        weight_route(spec, percent);
        Ok(())
    })
    .await?;
    Ok(())
}

/// Points Service `service`'s `label` selector at `version` (blue-green),
/// with the resourceVersion it was read at as the precondition.
pub async fn switch_selector(
    client: &Client,
    ns: &str,
    service: &str,
    label: &str,
    version: &str,
) -> Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let full = format!("{ns}/{service}");
    let err = |e: kube::Error| Error::SwitchSelector {
        name: full.clone(),
        message: e.to_string(),
    };
    let mut retry = k8s::ConflictRetry::new(&full);
    loop {
        retry.attempt()?;
        let svc = api.get(service).await.map_err(err)?;
        let current = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.get(label));
        if current.map(String::as_str) == Some(version) {
            return Ok(());
        }
        let patch = json!({
            "metadata": {"resourceVersion": svc.metadata.resource_version},
            "spec": {"selector": {label: version}},
        });
        match api
            .patch(service, &k8s::patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if ApiFailure::of(&e) == ApiFailure::Conflict => continue,
            Err(e) => return Err(err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Deployment {
        serde_json::from_value(
            json!({"metadata": {"name": "shop", "namespace": "ns", "uid": "u-9"}}),
        )
        .unwrap()
    }

    #[test]
    fn route_weights_add_a_canary_twin_then_update_it() {
        let mut spec = json!({"rules": [
            {"backendRefs": [{"name": "shop", "port": 80}]},
            {"backendRefs": [{"kind": "Service", "name": "other", "port": 8080, "weight": 1}]},
            {"matches": []}
        ]});
        let primaries = weight_route(&mut spec, 10);
        assert_eq!(
            primaries,
            BTreeSet::from(["shop".to_string(), "other".to_string()])
        );
        assert_eq!(
            spec["rules"][0]["backendRefs"],
            json!([{"name": "shop", "port": 80, "weight": 90}, {"name": "shop-canary", "port": 80, "weight": 10}])
        );
        weight_route(&mut spec, 50);
        let refs = spec["rules"][1]["backendRefs"].as_array().unwrap().clone();
        assert_eq!(refs.len(), 2);
        assert_eq!(
            (refs[0]["weight"].clone(), refs[1]["weight"].clone()),
            (json!(50), json!(50))
        );
        unweight_route(&mut spec);
        assert_eq!(
            spec["rules"][0]["backendRefs"],
            json!([{"name": "shop", "port": 80, "weight": 100}])
        );
        assert_eq!(spec["rules"][1]["backendRefs"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn canary_ingress_points_at_canary_services() {
        let primary: Ingress = serde_json::from_value(json!({
            "metadata": {"name": "shop", "namespace": "ns"},
            "spec": {
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["shop.example"]}],
                "rules": [{"host": "shop.example", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "shop", "port": {"number": 80}}}}
                ]}}]
            }
        }))
        .unwrap();
        let c = canary_ingress(&primary, &target(), 20);
        assert_eq!(c.metadata.name.as_deref(), Some("shop-canary"));
        let ann = c.metadata.annotations.unwrap();
        assert_eq!(ann[NGINX_CANARY], "true");
        assert_eq!(ann[NGINX_CANARY_WEIGHT], "20");
        let spec = c.spec.unwrap();
        assert!(spec.tls.is_none());
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        assert_eq!(
            backend_services(&spec),
            BTreeSet::from(["shop-canary".to_string()])
        );
    }

    #[test]
    fn canary_service_selects_canary_pods_only() {
        let primary: Service = serde_json::from_value(json!({
            "metadata": {"name": "shop", "namespace": "ns"},
            "spec": {"type": "NodePort", "selector": {"app": "shop"},
                     "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]}
        }))
        .unwrap();
        let s = canary_service(&primary, &target());
        assert_eq!(s.metadata.name.as_deref(), Some("shop-canary"));
        let spec = s.spec.unwrap();
        let sel = spec.selector.unwrap();
        assert_eq!(
            (sel["app"].as_str(), sel[ROLE_LABEL].as_str()),
            ("shop", "canary")
        );
        assert_eq!(spec.ports.unwrap()[0].node_port, None);
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    }
}
