//! Pod-spec helpers on `event`: containers (regular, init and ephemeral), their images,
//! privileged containers, added capabilities, host namespaces and hostPath mounts; and
//! `image_repository`.
//! The pod spec is found in Pods, workload templates and CronJobs.
//!
//! Owns the pod-spec lookup; calls `event`.

use rhai::plugin::*;
use rhai::{Array, EvalAltResult, ImmutableString};
use serde_json::Value;

use super::convert::{dyn_text, json_to_dynamic, strings, text};
use super::event::ScriptEvent;

/// The pod spec's container lists, as named in the Pod API.
pub const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// The pod-spec helpers on `Event` and `image_repository`, with the doc comments the
/// engine's metadata carries.
#[export_module]
pub(super) mod functions {
    use super::*;
    use crate::rules::api::event::functions::Event;

    /// Every container of the pod spec (`containers`, then `initContainers`, then
    /// `ephemeralContainers`), each as its JSON map.
    #[rhai_fn(pure)]
    pub fn containers(e: &mut Event) -> Array {
        super::containers(e).map(json_to_dynamic).collect()
    }

    /// The `image` of every container of the pod spec, in the same order.
    #[rhai_fn(pure)]
    pub fn images(e: &mut Event) -> Array {
        image_texts(super::containers(e))
    }

    /// The `image` of every container of one list (`containers`, `initContainers` or
    /// `ephemeralContainers`); any other name is an error.
    #[rhai_fn(pure, return_raw)]
    pub fn images_of(e: &mut Event, list: &str) -> Result<Array, Box<EvalAltResult>> {
        super::images_of(e, list)
    }

    /// Whether any container (init and ephemeral included) has
    /// `securityContext.privileged: true`.
    #[rhai_fn(pure)]
    pub fn privileged(e: &mut Event) -> bool {
        super::privileged(e)
    }

    /// The pod spec's `hostNetwork` (false when absent).
    #[rhai_fn(pure)]
    pub fn host_network(e: &mut Event) -> bool {
        spec_flag(e, "hostNetwork")
    }

    /// The pod spec's `hostPID` (false when absent).
    #[rhai_fn(pure)]
    pub fn host_pid(e: &mut Event) -> bool {
        spec_flag(e, "hostPID")
    }

    /// The pod spec's `hostIPC` (false when absent).
    #[rhai_fn(pure)]
    pub fn host_ipc(e: &mut Event) -> bool {
        spec_flag(e, "hostIPC")
    }

    /// The capabilities the containers add (`securityContext.capabilities.add`, init and
    /// ephemeral included): upper-cased, without a `CAP_` prefix, each once, in order;
    /// `ALL` (every capability) stays `ALL`.
    #[rhai_fn(pure)]
    pub fn capabilities_added(e: &mut Event) -> Array {
        super::capabilities_added(e)
    }

    /// The `hostPath.path` of every volume of the pod spec.
    #[rhai_fn(pure)]
    pub fn host_path_mounts(e: &mut Event) -> Array {
        super::host_path_mounts(e)
    }

    /// The image reference without its tag and digest; a registry port stays.
    pub fn image_repository(image: &str) -> ImmutableString {
        text(super::image_repository(image))
    }
}

/// The pod spec inside the request (or response) object: a Pod's `spec`, a workload's
/// `spec.template.spec`, or a CronJob's `spec.jobTemplate.spec.template.spec`.
fn pod_spec(e: &ScriptEvent) -> Option<&Value> {
    let obj = e.subject_object()?;
    [
        "/spec/jobTemplate/spec/template/spec",
        "/spec/template/spec",
    ]
    .into_iter()
    .find_map(|p| obj.pointer(p))
    .or_else(|| {
        // A Pod, or a patch of `kubectl debug` carrying only ephemeral containers.
        obj.get("spec")
            .filter(|s| CONTAINER_LISTS.iter().any(|k| s.get(*k).is_some()))
    })
}

/// All containers of the pod spec: regular, init and ephemeral.
fn containers(e: &ScriptEvent) -> impl Iterator<Item = &Value> {
    containers_of(e, &CONTAINER_LISTS)
}

/// The containers of the named lists of the pod spec.
fn containers_of<'a>(e: &'a ScriptEvent, lists: &'a [&str]) -> impl Iterator<Item = &'a Value> {
    let spec = pod_spec(e);
    lists
        .iter()
        .filter_map(move |k| spec.and_then(|s| s.get(*k)).and_then(Value::as_array))
        .flatten()
}

fn image_texts<'a>(containers: impl Iterator<Item = &'a Value>) -> Array {
    containers
        .filter_map(|c| c.get("image").and_then(Value::as_str))
        .map(dyn_text)
        .collect()
}

/// `event.images_of(list)`: the images of one container list; an unknown list is an error.
fn images_of(e: &ScriptEvent, list: &str) -> Result<Array, Box<EvalAltResult>> {
    let Some(list) = CONTAINER_LISTS.iter().find(|l| **l == list) else {
        return Err(format!(
            "images_of: unknown container list `{list}` (one of {})",
            CONTAINER_LISTS.join(", ")
        )
        .into());
    };
    Ok(image_texts(containers_of(e, std::slice::from_ref(list))))
}

/// `event.privileged()`: whether any container has `securityContext.privileged: true`.
fn privileged(e: &ScriptEvent) -> bool {
    containers(e).any(|c| {
        c.pointer("/securityContext/privileged")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    })
}

/// `event.capabilities_added()`: every container's added capabilities, as the container
/// runtime reads them (containerd and CRI-O upper-case them and add the `CAP_` prefix),
/// each once, in order of first appearance.
fn capabilities_added(e: &ScriptEvent) -> Array {
    let mut names: Vec<String> = Vec::new();
    let added = containers(e)
        .filter_map(|c| c.pointer("/securityContext/capabilities/add"))
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str);
    for cap in added {
        let upper = cap.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    strings(&names)
}

/// A boolean field of the pod spec (`hostNetwork`, …), false when absent.
fn spec_flag(e: &ScriptEvent, key: &str) -> bool {
    pod_spec(e)
        .and_then(|s| s.get(key))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// `event.host_path_mounts()`: the `hostPath.path` of every volume of the pod spec.
fn host_path_mounts(e: &ScriptEvent) -> Array {
    pod_spec(e)
        .and_then(|s| s.get("volumes"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/hostPath/path").and_then(Value::as_str))
        .map(dyn_text)
        .collect()
}

/// The image reference without its tag and digest (`docker.io/library/nginx:1.25@sha256:…`
/// → `docker.io/library/nginx`); a registry port (`host:5000/app`) stays.
pub fn image_repository(image: &str) -> &str {
    let name = image.split_once('@').map_or(image, |(n, _)| n);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].find(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_repository_drops_tag_and_digest_but_not_a_registry_port() {
        for (image, repo) in [
            ("nginx", "nginx"),
            ("nginx:1.25", "nginx"),
            ("docker.io/library/nginx:1.25", "docker.io/library/nginx"),
            (
                "registry.k8s.io/kube-proxy@sha256:abc",
                "registry.k8s.io/kube-proxy",
            ),
            (
                "quay.io/calico/node:v3.27@sha256:abc",
                "quay.io/calico/node",
            ),
            ("host:5000/app", "host:5000/app"),
            ("host:5000/team/app:2", "host:5000/team/app"),
            ("", ""),
        ] {
            assert_eq!(image_repository(image), repo, "{image}");
        }
    }
}
