//! Process-level tests of `klaxon gen apiserver-config`.
//!
//! Covers: the webhook URL (from `server.listen`, https with `[server.tls]`, `--url`, and the
//! refusal of 0.0.0.0 without `--url`); `--ca` embedded as base64 of the file (and refused for
//! http or non-PEM files); `--token` and `--basic` embedding the configured secrets as
//! double-quoted YAML scalars that decode back to the original, special characters included;
//! `--client-cert`/`--client-key` paths; the refusal to generate an unauthenticated kubeconfig
//! for a klaxon that requires authentication; `--out-dir` (kubeconfig mode 0600); and the
//! embedded audit policy equal byte for byte to config/apiserver/audit-policy.yaml.
//!
//! Every command runs in a temporary directory holding its own klaxon.toml, with
//! `SLACK_WEBHOOK_URL`, `RUST_LOG` and all `KLAXON_*` variables removed.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;
use tempfile::TempDir;

const POLICY_MARKER: &str = "# ---- audit-policy.yaml ----\n";
const WEBHOOK_MARKER: &str = "# ---- audit-webhook.yaml ----\n";

/// A token with characters YAML would otherwise misread: quote, backslash, colon, hash.
const TRICKY_TOKEN: &str = r#"t0k"en\with: colon #hash"#;

fn shipped_policy() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/apiserver/audit-policy.yaml");
    std::fs::read_to_string(path).expect("read shipped policy")
}

/// `klaxon --config DIR/klaxon.toml gen apiserver-config ARGS` with a clean environment.
fn gen_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = crate::support::process::klaxon_command(dir);
    cmd.arg("--config")
        .arg(dir.join("klaxon.toml"))
        .args(["gen", "apiserver-config"])
        .args(args);
    cmd
}

/// A temporary directory holding `klaxon.toml` with `config`.
fn config_dir(config: &str) -> TempDir {
    let dir = TempDir::new().expect("temp dir");
    std::fs::write(dir.path().join("klaxon.toml"), config).expect("write config");
    dir
}

/// Runs `gen apiserver-config ARGS` against `config`, expects success, returns stdout.
fn generate(config: &str, args: &[&str]) -> String {
    let dir = config_dir(config);
    let out = gen_cmd(dir.path(), args).assert().success();
    String::from_utf8(out.get_output().stdout.clone()).expect("utf-8 stdout")
}

/// Runs `gen apiserver-config ARGS` against `config`, expects failure, returns stderr.
fn generate_err(config: &str, args: &[&str]) -> String {
    let dir = config_dir(config);
    let out = gen_cmd(dir.path(), args).assert().failure();
    String::from_utf8(out.get_output().stderr.clone()).expect("utf-8 stderr")
}

/// The kubeconfig part of stdout: after its marker line and the `---` document start.
fn kubeconfig(stdout: &str) -> &str {
    let (_, rest) = stdout
        .split_once(WEBHOOK_MARKER)
        .expect("stdout has the webhook marker");
    rest.strip_prefix("---\n")
        .expect("the kubeconfig starts a YAML document")
}

/// The value of the one line of `yaml` that starts with `prefix` (indentation included).
fn value_of<'a>(yaml: &'a str, prefix: &str) -> &'a str {
    let mut found = yaml.lines().filter_map(|l| l.strip_prefix(prefix));
    let value = found
        .next()
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{yaml}"));
    assert!(
        found.next().is_none(),
        "several lines start with {prefix:?}"
    );
    value
}

/// Decodes a YAML double-quoted scalar (the escapes the generator may use).
fn unquote(scalar: &str) -> String {
    let inner = scalar
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{scalar:?} is not a double-quoted scalar"));
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => panic!("unescaped quote inside {scalar:?}"),
            '\\' => match chars.next().expect("escape at end") {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let code = u32::from_str_radix(&hex, 16).expect("hex escape");
                    out.push(char::from_u32(code).expect("valid char"));
                }
                other => panic!("unexpected escape \\{other} in {scalar:?}"),
            },
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 with padding, decoded.
fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("standard base64 with padding")
}

/// A self-signed certificate in PEM.
fn ca_pem() -> String {
    let key = rcgen::generate_simple_self_signed(vec!["klaxon.example.internal".to_owned()])
        .expect("generate certificate");
    key.cert.pem()
}

const TLS: &str = "[server.tls]\ncert_file = \"/nonexistent/klaxon.crt\"\nkey_file = \"/nonexistent/klaxon.key\"\n";

#[test]
fn url_defaults_to_http_on_the_listen_address() {
    let stdout = generate("[server]\nlisten = \"127.0.0.1:9090\"\n", &[]);
    let kc = kubeconfig(&stdout);
    assert_eq!(
        value_of(kc, "      server: "),
        "\"http://127.0.0.1:9090/audit\""
    );
    for line in [
        "apiVersion: v1",
        "kind: Config",
        "  - name: klaxon",
        "  - name: kube-apiserver",
        "    user: {}",
        "  - name: default",
        "      cluster: klaxon",
        "      user: kube-apiserver",
        "current-context: default",
    ] {
        assert!(kc.lines().any(|l| l == line), "no line {line:?} in:\n{kc}");
    }
    assert!(!kc.contains("certificate-authority"), "{kc}");
}

#[test]
fn ipv6_listen_address_is_bracketed() {
    let stdout = generate("[server]\nlisten = \"[::1]:8080\"\n", &[]);
    assert_eq!(
        value_of(kubeconfig(&stdout), "      server: "),
        "\"http://[::1]:8080/audit\""
    );
}

#[test]
fn url_is_https_when_tls_is_configured() {
    let stdout = generate(
        &format!("[server]\nlisten = \"127.0.0.1:8443\"\n{TLS}"),
        &[],
    );
    let kc = kubeconfig(&stdout);
    assert_eq!(
        value_of(kc, "      server: "),
        "\"https://127.0.0.1:8443/audit\""
    );
    assert!(
        kc.contains("system roots"),
        "no system-roots note in:\n{kc}"
    );
    assert!(!kc.contains("certificate-authority-data"), "{kc}");
}

#[test]
fn url_flag_overrides_and_allows_every_interface() {
    let url = "https://klaxon.example.internal:8443/audit";
    let stdout = generate(
        &format!("[server]\nlisten = \"0.0.0.0:8443\"\n{TLS}"),
        &["--url", url],
    );
    assert_eq!(
        value_of(kubeconfig(&stdout), "      server: "),
        format!("\"{url}\"")
    );
}

#[test]
fn every_interface_without_url_is_refused() {
    let stderr = generate_err("[server]\nlisten = \"0.0.0.0:8080\"\n", &[]);
    assert!(stderr.contains("0.0.0.0:8080"), "{stderr}");
    assert!(stderr.contains("--url"), "{stderr}");
    let stderr = generate_err("[server]\nlisten = \"[::]:8080\"\n", &[]);
    assert!(stderr.contains("--url"), "{stderr}");
}

#[test]
fn url_that_is_not_http_is_refused() {
    let stderr = generate_err("", &["--url", "ftp://klaxon.example.internal/audit"]);
    assert!(stderr.contains("http"), "{stderr}");
}

#[test]
fn ca_is_embedded_as_base64_of_the_file() {
    let dir = config_dir(&format!("[server]\nlisten = \"10.0.0.7:8443\"\n{TLS}"));
    let pem = ca_pem();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &pem).expect("write ca");
    let out = gen_cmd(dir.path(), &["--ca", ca.to_str().expect("utf-8 path")])
        .assert()
        .success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).expect("utf-8");
    let kc = kubeconfig(&stdout);
    let data = unquote(value_of(kc, "      certificate-authority-data: "));
    assert_eq!(base64_decode(&data), pem.as_bytes());
    assert!(!kc.contains("system roots"), "{kc}");
}

#[test]
fn ca_that_is_not_pem_is_refused() {
    let dir = config_dir(TLS);
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "not a certificate\n").expect("write ca");
    gen_cmd(dir.path(), &["--ca", ca.to_str().expect("utf-8 path")])
        .assert()
        .failure()
        .stderr(contains("--ca").and(contains("PEM")));
    gen_cmd(dir.path(), &["--ca", "/nonexistent/ca.crt"])
        .assert()
        .failure()
        .stderr(contains("cannot read"));
}

#[test]
fn ca_with_an_http_url_is_refused() {
    let dir = config_dir("");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, ca_pem()).expect("write ca");
    gen_cmd(dir.path(), &["--ca", ca.to_str().expect("utf-8 path")])
        .assert()
        .failure()
        .stderr(contains("--ca").and(contains("http://127.0.0.1:8080/audit")));
}

#[test]
fn token_is_embedded_escaped_and_decodes_to_the_configured_one() {
    // TOML literal string: the token exactly as written between the single quotes.
    let config = format!("[server.auth]\nbearer_token = '{TRICKY_TOKEN}'\n");
    let dir = config_dir(&config);
    let out = gen_cmd(dir.path(), &["--token"]).assert().success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).expect("utf-8");
    let stderr = String::from_utf8(out.get_output().stderr.clone()).expect("utf-8");
    let kc = kubeconfig(&stdout);
    let line = kc
        .lines()
        .find(|l| l.starts_with("      token: "))
        .expect("token line");
    assert_eq!(line, r#"      token: "t0k\"en\\with: colon #hash""#);
    assert_eq!(unquote(value_of(kc, "      token: ")), TRICKY_TOKEN);
    assert!(
        !stderr.contains("t0k"),
        "the token leaked to stderr: {stderr}"
    );
}

#[test]
fn basic_credentials_are_embedded() {
    let config =
        "[server.auth]\nbasic_username = \"kube-apiserver\"\nbasic_password = 'p\"w: d\\'\n";
    let stdout = generate(config, &["--basic"]);
    let kc = kubeconfig(&stdout);
    assert_eq!(unquote(value_of(kc, "      username: ")), "kube-apiserver");
    assert_eq!(value_of(kc, "      password: "), r#""p\"w: d\\""#);
    assert_eq!(unquote(value_of(kc, "      password: ")), "p\"w: d\\");
    assert!(!kc.contains("token:"), "{kc}");
}

#[test]
fn client_certificate_paths_are_referenced() {
    let config = format!(
        "{TLS}client_auth = \"required\"\nclient_ca_file = \"/nonexistent/ca.crt\"\n\n\
         [server.auth]\nclient_cert_subjects = [\"CN=kube-apiserver\"]\n"
    );
    let stdout = generate(
        &config,
        &[
            "--client-cert",
            "/etc/kubernetes/audit/apiserver-to-klaxon.crt",
            "--client-key",
            "/etc/kubernetes/audit/apiserver-to-klaxon.key",
        ],
    );
    let kc = kubeconfig(&stdout);
    assert_eq!(
        value_of(kc, "      client-certificate: "),
        "\"/etc/kubernetes/audit/apiserver-to-klaxon.crt\""
    );
    assert_eq!(
        value_of(kc, "      client-key: "),
        "\"/etc/kubernetes/audit/apiserver-to-klaxon.key\""
    );
    assert!(kc.contains("apiserver host"), "no note on paths in:\n{kc}");
    // Without the flags, klaxon's required client certificate is named.
    let stderr = generate_err(&config, &[]);
    assert!(stderr.contains("--client-cert"), "{stderr}");
}

#[test]
fn client_certificate_needs_https() {
    let stderr = generate_err("", &["--client-cert", "/a.crt", "--client-key", "/a.key"]);
    assert!(stderr.contains("https"), "{stderr}");
}

#[test]
fn auth_configured_without_a_credential_flag_names_the_flag() {
    let stderr = generate_err(
        &format!("[server.auth]\nbearer_token = '{TRICKY_TOKEN}'\n"),
        &[],
    );
    assert!(stderr.contains("--token"), "{stderr}");
    assert!(
        !stderr.contains("t0k"),
        "the token leaked to stderr: {stderr}"
    );
    let stderr = generate_err(
        "[server.auth]\nbasic_username = \"u\"\nbasic_password = \"p\"\n",
        &[],
    );
    assert!(stderr.contains("--basic"), "{stderr}");
}

#[test]
fn credential_flag_without_that_credential_configured_is_refused() {
    let stderr = generate_err("", &["--token"]);
    assert!(stderr.contains("bearer_token"), "{stderr}");
    let stderr = generate_err("[server.auth]\nbearer_token = \"x\"\n", &["--basic"]);
    assert!(stderr.contains("basic_username"), "{stderr}");
}

#[test]
fn only_one_credential_kind_is_accepted() {
    let stderr = generate_err(
        "[server.auth]\nbearer_token = \"x\"\nbasic_username = \"u\"\nbasic_password = \"p\"\n",
        &["--token", "--basic"],
    );
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn out_dir_writes_both_files_and_keeps_the_kubeconfig_private() {
    let config = format!("[server.auth]\nbearer_token = '{TRICKY_TOKEN}'\n");
    let dir = config_dir(&config);
    let out_dir = dir.path().join("out");
    let out = gen_cmd(
        dir.path(),
        &[
            "--token",
            "--out-dir",
            out_dir.to_str().expect("utf-8 path"),
        ],
    )
    .assert()
    .success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).expect("utf-8");
    let policy = out_dir.join("audit-policy.yaml");
    let webhook = out_dir.join("audit-webhook.yaml");
    assert!(stdout.contains(&policy.display().to_string()), "{stdout}");
    assert!(stdout.contains(&webhook.display().to_string()), "{stdout}");
    assert!(
        !stdout.contains("t0k"),
        "the token went to stdout: {stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(&policy).expect("read policy"),
        shipped_policy()
    );
    let written = std::fs::read_to_string(&webhook).expect("read kubeconfig");
    let printed = generate(&config, &["--token"]);
    assert_eq!(written, kubeconfig(&printed));
    assert_eq!(unquote(value_of(&written, "      token: ")), TRICKY_TOKEN);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&webhook)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "kubeconfig mode {mode:o}");
    }
}

#[cfg(unix)]
#[test]
fn out_dir_narrows_an_existing_kubeconfig_to_0600() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = config_dir("");
    let webhook = dir.path().join("audit-webhook.yaml");
    std::fs::write(&webhook, "old").expect("write old");
    std::fs::set_permissions(&webhook, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    gen_cmd(
        dir.path(),
        &["--out-dir", dir.path().to_str().expect("utf-8")],
    )
    .assert()
    .success();
    let mode = std::fs::metadata(&webhook)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "kubeconfig mode {mode:o}");
    assert!(
        std::fs::read_to_string(&webhook)
            .expect("read")
            .contains("current-context: default")
    );
}

#[test]
fn stdout_embeds_the_shipped_policy_byte_for_byte() {
    let stdout = generate("", &[]);
    let rest = stdout
        .strip_prefix(POLICY_MARKER)
        .expect("stdout starts with the policy marker");
    let (policy, _) = rest
        .split_once(WEBHOOK_MARKER)
        .expect("the webhook marker follows the policy");
    assert_eq!(policy, shipped_policy());
}
