//! `klaxon gen audit-policy`: an audit policy from the loaded rules' needs
//! (`audit::policy::generate`).
//!
//! `klaxon gen apiserver-config`: the two files a kube-apiserver needs to send its audit
//! events to this klaxon — the shipped audit policy and a webhook kubeconfig built from the
//! loaded configuration (URL from `server.listen` and `server.tls`, a credential from
//! `server.auth`).
//!
//! The kubeconfig is written by hand: every string is a YAML double-quoted scalar with
//! escapes, so a token or password with any characters stays valid YAML. Secrets go into
//! the generated file only (that is its purpose), never into messages or logs.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::{ArgGroup, Args, Subcommand};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use crate::audit::policy::{self, Target};
use crate::config::Config;
use crate::server::tls::ClientAuth;

/// The shipped audit policy, emitted byte for byte.
const AUDIT_POLICY: &str = include_str!("../../config/apiserver/audit-policy.yaml");

/// File name of the audit policy.
const POLICY_FILE: &str = "audit-policy.yaml";
/// File name of the webhook kubeconfig.
const WEBHOOK_FILE: &str = "audit-webhook.yaml";

/// `klaxon gen` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The audit policy and the webhook kubeconfig for kube-apiserver, matching this config.
    ApiserverConfig(ApiserverArgs),
    /// An audit policy that logs what the loaded rules need (`MATCH`, `LEVEL`) and nothing else.
    AuditPolicy(AuditPolicyArgs),
}

/// Options of `klaxon gen audit-policy`.
#[derive(Debug, Args)]
pub struct AuditPolicyArgs {
    /// Write the policy to this file instead of to stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Options of `klaxon gen apiserver-config`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("credential").multiple(false)))]
pub struct ApiserverArgs {
    /// URL the apiserver posts to (default: http(s)://LISTEN/audit from `server.listen`).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// PEM CA certificate(s) the apiserver trusts for klaxon's certificate (https only).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Embed `server.auth`'s bearer token.
    #[arg(long, group = "credential")]
    token: bool,
    /// Embed `server.auth`'s basic username and password.
    #[arg(long, group = "credential")]
    basic: bool,
    /// Client certificate, as a path on the apiserver host.
    #[arg(
        long,
        value_name = "FILE",
        group = "credential",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// Client certificate's private key, as a path on the apiserver host.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Write audit-policy.yaml and audit-webhook.yaml here instead of to stdout.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

pub(super) fn run(config: &Config, command: &Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::ApiserverConfig(args) => apiserver_config(config, args),
        Command::AuditPolicy(args) => audit_policy(config, args),
    }
}

/// `klaxon gen audit-policy`: the policy, with a comment for each rule that cannot be
/// served precisely (no `MATCH`, a resource of no API group klaxon knows).
fn audit_policy(config: &Config, args: &AuditPolicyArgs) -> anyhow::Result<ExitCode> {
    let rules = super::load_rules(config)?;
    let needs = rules.audit_needs();
    let mut notes = Vec::new();
    for rule in rules.rules().iter().filter(|r| r.filters().is_none()) {
        notes.push(format!(
            "Rule {} ({}) declares no MATCH: it may act on any request, so every request is \
             logged at {} or above (declare MATCH to narrow this).",
            rule.name(),
            rule.path().display(),
            rule.level()
        ));
    }
    for rule in rules.rules() {
        let coded = rule
            .filters()
            .is_some_and(|alternatives| alternatives.iter().any(|f| f.code.is_some()));
        if coded {
            notes.push(format!(
                "Rule {} reads only some response codes: a policy cannot select by the \
                 response, so every request its MATCH names otherwise is logged.",
                rule.name()
            ));
        }
    }
    let mut unknown: Vec<(String, String)> = needs
        .iter()
        .flat_map(|need| {
            need.targets.iter().filter_map(|t| match t {
                Target::Resource {
                    group: None,
                    resource,
                    ..
                } => Some((need.rule.clone(), resource.clone())),
                _ => None,
            })
        })
        .collect();
    unknown.dedup();
    for (rule, resource) in unknown {
        notes.push(format!(
            "Rule {rule} reads resource {resource:?}, which the kube-apiserver does not serve \
             itself: declare its api_group in MATCH; until then it is logged with every \
             request of its verbs."
        ));
    }
    let text = policy::generate(&needs, &notes);
    match &args.out {
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("cannot write to stdout")?,
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How the apiserver authenticates to klaxon.
enum Credential {
    None,
    Token(String),
    Basic { username: String, password: String },
    ClientCert { cert: String, key: String },
}

fn apiserver_config(config: &Config, args: &ApiserverArgs) -> anyhow::Result<ExitCode> {
    let url = webhook_url(config, args.url.as_deref())?;
    let https = url.starts_with("https://");
    let ca_data = match &args.ca {
        None => None,
        Some(_) if !https => bail!(
            "--ca is for an https URL, and the apiserver will post to {url}: plain HTTP has \
             no certificate to verify"
        ),
        Some(path) => Some(read_ca(path)?),
    };
    let credential = credential(config, args, https)?;
    let kubeconfig = webhook_kubeconfig(config, &url, ca_data.as_deref(), &credential);
    match &args.out_dir {
        None => {
            let text = format!(
                "# ---- {POLICY_FILE} ----\n{AUDIT_POLICY}# ---- {WEBHOOK_FILE} ----\n---\n{kubeconfig}"
            );
            std::io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .context("cannot write to stdout")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let policy = dir.join(POLICY_FILE);
            std::fs::write(&policy, AUDIT_POLICY)
                .with_context(|| format!("cannot write {}", policy.display()))?;
            let webhook = dir.join(WEBHOOK_FILE);
            write_private(&webhook, kubeconfig.as_bytes())
                .with_context(|| format!("cannot write {}", webhook.display()))?;
            println!("wrote {}", policy.display());
            println!("wrote {} (mode 0600)", webhook.display());
            println!(
                "copy both to /etc/kubernetes/audit/ on every control-plane node \
                 (see docs/DEPLOYMENT.md, 'Point a kubeadm cluster at klaxon')"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--url` when given, else `http(s)://LISTEN/audit` unless klaxon listens on every interface.
fn webhook_url(config: &Config, given: Option<&str>) -> anyhow::Result<String> {
    let scheme = match config.serve.server.tls {
        Some(_) => "https",
        None => "http",
    };
    let Some(given) = given else {
        if config.serve.listen.ip().is_unspecified() {
            bail!(
                "klaxon listens on {} (every interface), which is no address the apiserver can \
                 post to: pass --url with one it can reach, e.g. --url {scheme}://HOST:{}/audit",
                config.serve.listen,
                config.serve.listen.port()
            );
        }
        return Ok(format!("{scheme}://{}/audit", config.serve.listen));
    };
    if given.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("--url {given:?}: a URL has no spaces or control characters");
    }
    let parsed = url::Url::parse(given).with_context(|| format!("--url {given:?} is no URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        bail!("--url {given:?}: use an http:// or https:// URL with a host");
    }
    // Keep the URL as written (the apiserver posts to it exactly), bar the scheme's case.
    let rest = &given[parsed.scheme().len()..];
    Ok(format!("{}{rest}", parsed.scheme()))
}

/// The base64 of `path`'s bytes, once they are known to hold a PEM certificate.
fn read_ca(path: &Path) -> anyhow::Result<String> {
    let bytes =
        std::fs::read(path).with_context(|| format!("--ca: cannot read {}", path.display()))?;
    let mut certs = 0;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        cert.map_err(|e| anyhow::anyhow!("--ca: {} is not valid PEM: {e}", path.display()))?;
        certs += 1;
    }
    if certs == 0 {
        bail!(
            "--ca: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(&bytes))
}

/// The credential the flags ask for, checked against `server.auth` and `server.tls`.
fn credential(config: &Config, args: &ApiserverArgs, https: bool) -> anyhow::Result<Credential> {
    let auth = &config.serve.server.auth;
    let client_auth = config
        .serve
        .server
        .tls
        .as_ref()
        .map_or(ClientAuth::None, |t| t.client_auth);
    if args.client_cert.is_none() && client_auth == ClientAuth::Required {
        bail!(
            "klaxon requires a client certificate (server.tls.client_auth = \"required\"): pass \
             --client-cert FILE --client-key FILE, or the apiserver would be refused"
        );
    }
    if args.token {
        let token = auth.bearer_token.as_ref().context(
            "--token: klaxon has no bearer token configured (server.auth.bearer_token, \
             bearer_token_env or bearer_token_file)",
        )?;
        return Ok(Credential::Token(token.expose().to_owned()));
    }
    if args.basic {
        let (username, password) = auth.basic.as_ref().context(
            "--basic: klaxon has no basic credentials configured (server.auth.basic_username \
             and basic_password)",
        )?;
        return Ok(Credential::Basic {
            username: username.clone(),
            password: password.expose().to_owned(),
        });
    }
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        if !https {
            bail!("--client-cert needs an https URL: a client certificate is presented in TLS");
        }
        if client_auth == ClientAuth::None {
            bail!(
                "--client-cert: klaxon does not ask for client certificates (set \
                 server.tls.client_auth and server.tls.client_ca_file)"
            );
        }
        if auth.is_enabled() && auth.client_cert_subjects.is_empty() {
            bail!(
                "--client-cert: klaxon lets no certificate subject in (server.auth.\
                 client_cert_subjects is empty){}",
                other_flags(config)
            );
        }
        let utf8 = |p: &Path, flag: &str| {
            p.to_str()
                .map(str::to_owned)
                .with_context(|| format!("{flag}: the path must be UTF-8"))
        };
        return Ok(Credential::ClientCert {
            cert: utf8(cert, "--client-cert")?,
            key: utf8(key, "--client-key")?,
        });
    }
    if auth.is_enabled() {
        bail!(
            "klaxon requires authentication ([server.auth]) and the apiserver would be \
             refused without a credential{}",
            other_flags(config)
        );
    }
    Ok(Credential::None)
}

/// `": pass --token"` (or the choice of flags) for what `server.auth` accepts.
fn other_flags(config: &Config) -> String {
    let auth = &config.serve.server.auth;
    let mut flags = Vec::new();
    if auth.bearer_token.is_some() {
        flags.push("--token");
    }
    if auth.basic.is_some() {
        flags.push("--basic");
    }
    if !auth.client_cert_subjects.is_empty() {
        flags.push("--client-cert FILE --client-key FILE");
    }
    match flags.as_slice() {
        [] => String::new(),
        [one] => format!(": pass {one}"),
        many => format!(": pass one of {}", many.join(", ")),
    }
}

/// The kubeconfig for `--audit-webhook-config-file`.
fn webhook_kubeconfig(
    config: &Config,
    url: &str,
    ca_data: Option<&str>,
    credential: &Credential,
) -> String {
    let https = url.starts_with("https://");
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    line("# Where the kube-apiserver sends its audit events: a kubeconfig file.");
    line(&format!(
        "# Generated by `klaxon gen apiserver-config` for a klaxon listening on {} ({}).",
        config.serve.listen,
        match config.serve.server.tls {
            Some(_) => "TLS",
            None => "plain HTTP",
        }
    ));
    line("#");
    line("# Use with:  --audit-webhook-config-file=/etc/kubernetes/audit/audit-webhook.yaml");
    line("# The apiserver reads this file only at start-up: restart it after a change.");
    if matches!(credential, Credential::Token(_) | Credential::Basic { .. }) {
        line("# It holds a secret: keep it mode 0600, readable by root only.");
    }
    line("apiVersion: v1");
    line("kind: Config");
    line("clusters:");
    line("  - name: klaxon");
    line("    cluster:");
    line(&format!("      server: {}", quoted(url)));
    if https {
        line("      # klaxon's certificate must name this host (or IP) as a subjectAltName.");
    }
    match ca_data {
        Some(data) => line(&format!(
            "      certificate-authority-data: {}",
            quoted(data)
        )),
        None if https => {
            line("      # No CA given (--ca): the apiserver will verify klaxon's certificate");
            line("      # against its system roots.");
        }
        None => {}
    }
    line("users:");
    line("  - name: kube-apiserver");
    match credential {
        Credential::None => {
            line("    # No credentials: klaxon has no [server.auth] configured.");
            line("    user: {}");
        }
        Credential::Token(token) => {
            line("    user:");
            line(&format!("      token: {}", quoted(token)));
        }
        Credential::Basic { username, password } => {
            line("    user:");
            line(&format!("      username: {}", quoted(username)));
            line(&format!("      password: {}", quoted(password)));
        }
        Credential::ClientCert { cert, key } => {
            line("    user:");
            line("      # Paths as seen on the apiserver host (inside its pod: keep them in");
            line(
                "      # /etc/kubernetes/audit/); relative ones are read from this file's directory.",
            );
            line(&format!("      client-certificate: {}", quoted(cert)));
            line(&format!("      client-key: {}", quoted(key)));
        }
    }
    line("contexts:");
    line("  - name: default");
    line("    context:");
    line("      cluster: klaxon");
    line("      user: kube-apiserver");
    line("current-context: default");
    out
}

/// `s` as a YAML double-quoted scalar: `"` and `\` escaped, control and line-break
/// characters as escapes, everything else as is.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `bytes` to `path` readable by its owner only, also when the file already exists.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let file = options.open(path)?;
        // An existing file keeps its mode on open: narrow it before the secret goes in.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        write_all(file, bytes)
    }
    #[cfg(not(unix))]
    {
        write_all(options.open(path)?, bytes)
    }
}

fn write_all(mut file: std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_escapes_what_yaml_double_quotes_need() {
        assert_eq!(quoted(r#"a"b\c:d #e"#), r#""a\"b\\c:d #e""#);
        assert_eq!(quoted("x\ny\u{7}\u{2028}é"), "\"x\\ny\\u0007\\u2028é\"");
    }
}
