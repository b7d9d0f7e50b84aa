//! Clients that act as someone else, the way `kubectl --as/--as-group` does: the admin
//! credentials plus `Impersonate-User`/`Impersonate-Group` headers, so the API server
//! authorizes and admits each request as that user (RBAC, ValidatingAdmissionPolicy
//! `request.userInfo` and `authorizer` all see the impersonated identity). The admin
//! (`system:masters`) may impersonate anyone.
//!
//! ```ignore
//! let alice = support::impersonate::user(&cp, "alice", &[]);
//! let sa = support::impersonate::service_account(&cp, "whisperer-system", "whisperer-injector");
//! support::impersonate::grant(&cp.client(), "shop", "alice-attach", &Subject::user("alice"), rules).await;
//! ```

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject as RbacSubject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use super::ControlPlane;

/// Whom a client impersonates, and whom a RoleBinding names.
#[derive(Debug, Clone)]
pub enum Subject {
    User(String),
    ServiceAccount { namespace: String, name: String },
}

impl Subject {
    pub fn user(name: &str) -> Subject {
        Subject::User(name.to_string())
    }

    pub fn service_account(namespace: &str, name: &str) -> Subject {
        Subject::ServiceAccount {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// The user name the API server sees (`request.userInfo.username`).
    pub fn username(&self) -> String {
        match self {
            Subject::User(n) => n.clone(),
            Subject::ServiceAccount { namespace, name } => {
                format!("system:serviceaccount:{namespace}:{name}")
            }
        }
    }

    /// The groups a real token of this subject carries.
    pub fn groups(&self) -> Vec<String> {
        match self {
            Subject::User(_) => vec!["system:authenticated".into()],
            Subject::ServiceAccount { namespace, .. } => vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }

    fn rbac(&self) -> RbacSubject {
        match self {
            Subject::User(n) => RbacSubject {
                kind: "User".into(),
                name: n.clone(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                namespace: None,
            },
            Subject::ServiceAccount { namespace, name } => RbacSubject {
                kind: "ServiceAccount".into(),
                name: name.clone(),
                api_group: None,
                namespace: Some(namespace.clone()),
            },
        }
    }
}

/// A client acting as `subject` (with its usual groups plus `extra_groups`).
pub fn client_as(cp: &ControlPlane, subject: &Subject, extra_groups: &[&str]) -> kube::Client {
    let mut config = cp.config();
    let mut groups = subject.groups();
    groups.extend(extra_groups.iter().map(|g| g.to_string()));
    config.auth_info.impersonate = Some(subject.username());
    config.auth_info.impersonate_groups = Some(groups);
    kube::Client::try_from(config).expect("impersonating kube client")
}

/// A copy of the plane's kubeconfig (written into `dir`) that acts as `subject`
/// (`as`/`as-groups`), for code that builds its own client from a kubeconfig, such as
/// `serve --kubeconfig`.
pub fn kubeconfig_as(
    cp: &ControlPlane,
    subject: &Subject,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let text = std::fs::read_to_string(cp.kubeconfig_path()).expect("the plane's kubeconfig");
    let mut kc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    for user in kc["users"].as_sequence_mut().expect("users") {
        user["user"]["as"] = subject.username().into();
        user["user"]["as-groups"] = subject.groups().into();
    }
    let path = dir.join(format!(
        "kubeconfig-as-{}",
        subject.username().replace(':', "-")
    ));
    std::fs::write(&path, serde_yaml::to_string(&kc).expect("kubeconfig"))
        .expect("write kubeconfig");
    path
}

/// A client acting as user `name` (group `system:authenticated` plus `extra_groups`).
pub fn user(cp: &ControlPlane, name: &str, extra_groups: &[&str]) -> kube::Client {
    client_as(cp, &Subject::user(name), extra_groups)
}

/// A client acting as ServiceAccount `namespace/name`, as its token would.
pub fn service_account(cp: &ControlPlane, namespace: &str, name: &str) -> kube::Client {
    client_as(cp, &Subject::service_account(namespace, name), &[])
}

/// One RBAC rule: `rule(&[""], &["pods/ephemeralcontainers"], &["patch"])`.
pub fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(v(groups)),
        resources: Some(v(resources)),
        verbs: v(verbs),
        ..Default::default()
    }
}

/// [`rule`] limited to `names` (RBAC `resourceNames`).
pub fn named_rule(
    groups: &[&str],
    resources: &[&str],
    names: &[&str],
    verbs: &[&str],
) -> PolicyRule {
    PolicyRule {
        resource_names: Some(names.iter().map(|s| s.to_string()).collect()),
        ..rule(groups, resources, verbs)
    }
}

/// Creates Role `name` with `rules` in `namespace` and binds `subject` to it (as admin).
pub async fn grant(
    admin: &kube::Client,
    namespace: &str,
    name: &str,
    subject: &Subject,
    rules: Vec<PolicyRule>,
) {
    let meta = ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        ..Default::default()
    };
    let role = Role {
        metadata: meta.clone(),
        rules: Some(rules),
    };
    Api::<Role>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await
        .unwrap_or_else(|e| panic!("create Role {namespace}/{name}: {e}"));
    bind(admin, namespace, name, subject, "Role", name).await;
}

/// Binds `subject` in `namespace` to an existing `kind` (`Role` or `ClusterRole`) `role`.
pub async fn bind(
    admin: &kube::Client,
    namespace: &str,
    name: &str,
    subject: &Subject,
    kind: &str,
    role: &str,
) {
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: kind.into(),
            name: role.into(),
        },
        subjects: Some(vec![subject.rbac()]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("create RoleBinding {namespace}/{name}: {e}"));
}
