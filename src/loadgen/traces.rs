//! Falco's Kubernetes audit test traces (tests/fixtures/falco, Apache-2.0, see its NOTICE),
//! embedded at compile time: the bodies of the load generator's write events.
//!
//! Every `.json` trace is listed, malformed ones included; `mix` keeps the lines that parse
//! and whose verb is a write.

/// Embeds each named trace as `(file name, contents)`.
macro_rules! traces {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../tests/fixtures/falco/", $name)))),*]
    };
}

/// Every Falco trace file, as `(file name, JSON lines)`.
pub(super) const FALCO_TRACES: &[(&str, &str)] = traces![
    "anonymous_creates_namespace_foo.json",
    "attach_cluster_admin_role.json",
    "attach_pod.json",
    "create_cluster_role_pod_exec.json",
    "create_cluster_role_wildcard_resources.json",
    "create_cluster_role_wildcard_verbs.json",
    "create_cluster_role_write_privileges.json",
    "create_clusterrole.json",
    "create_clusterrolebinding.json",
    "create_configmap.json",
    "create_configmap_no_sensitive_values.json",
    "create_configmap_sensitive_values.json",
    "create_deployment.json",
    "create_kube_system_secret.json",
    "create_nginx_pod_hostnetwork.json",
    "create_nginx_pod_no_secctx_1st_container_privileged_2nd_container.json",
    "create_nginx_pod_nohostnetwork.json",
    "create_nginx_pod_privileged.json",
    "create_nginx_pod_privileged_2nd_container.json",
    "create_nginx_pod_sensitive_mount.json",
    "create_nginx_pod_sensitive_mount_2nd_container.json",
    "create_nginx_pod_unprivileged.json",
    "create_nginx_pod_unsensitive_mount.json",
    "create_nginx_service_nodeport.json",
    "create_nginx_service_nonodeport.json",
    "create_pod_kube_public_namespace.json",
    "create_pod_kube_system_namespace.json",
    "create_secret.json",
    "create_service.json",
    "create_service_account_token_secret.json",
    "create_serviceaccount.json",
    "create_serviceaccount_kube_public_namespace.json",
    "create_serviceaccount_kube_system_namespace.json",
    "delete_cluster_role_kube_aggregator.json",
    "delete_clusterrole.json",
    "delete_clusterrolebinding.json",
    "delete_configmap.json",
    "delete_deployment.json",
    "delete_namespace_foo.json",
    "delete_secret.json",
    "delete_service.json",
    "delete_serviceaccount.json",
    "exec_pod.json",
    "fal_01_003.json",
    "minikube_creates_namespace_foo.json",
    "modify_cluster_role_node_problem_detector.json",
    "some-user_creates_namespace_foo.json",
];
