//! A real SMTP server for the email tests: `smtp_server.py` (aiosmtpd) run as a child
//! process, a test PKI made with rcgen, and a small MIME reader for the mails it receives.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::Deserialize;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The server script, next to this file.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_server.py");

/// Bound on any wait for the server, so that a broken server fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(30);

/// A test CA and a server certificate it signed for `localhost` and 127.0.0.1, as PEM files.
pub struct Pki {
    /// Holds the files.
    _dir: TempDir,
    /// The CA certificate: what the client must trust.
    pub ca: PathBuf,
    /// The server certificate.
    pub cert: PathBuf,
    /// The server certificate's private key.
    pub key: PathBuf,
}

impl Pki {
    /// Generates the CA and the server certificate into a fresh temporary directory.
    pub fn generate() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "klaxon test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let server_cert = params.signed_by(&server_key, &issuer).unwrap();

        let dir = TempDir::new().unwrap();
        let ca = dir.path().join("ca.pem");
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server-key.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        std::fs::write(&cert, server_cert.pem()).unwrap();
        std::fs::write(&key, server_key.serialize_pem()).unwrap();
        Self {
            _dir: dir,
            ca,
            cert,
            key,
        }
    }
}

/// How to run the server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Certificate and key: offer (and require) STARTTLS, or implicit TLS with `implicit_tls`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Speak TLS from the first byte (SMTPS) instead of STARTTLS.
    pub implicit_tls: bool,
    /// Require AUTH with this user and password.
    pub auth: Option<(String, String)>,
    /// Answer every DATA with this code instead of accepting the mail.
    pub reject_code: Option<u16>,
}

impl ServerOptions {
    /// A plain server that accepts every mail.
    pub fn plain() -> Self {
        Self::default()
    }

    /// A server that requires STARTTLS with the PKI's server certificate.
    pub fn starttls(pki: &Pki) -> Self {
        Self {
            tls: Some((pki.cert.clone(), pki.key.clone())),
            ..Self::default()
        }
    }

    /// A server that speaks TLS from the first byte with the PKI's server certificate.
    pub fn implicit_tls(pki: &Pki) -> Self {
        Self {
            implicit_tls: true,
            ..Self::starttls(pki)
        }
    }

    /// Also require AUTH with `user` and `password`.
    pub fn with_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Refuse every mail with `code`.
    pub fn rejecting(mut self, code: u16) -> Self {
        self.reject_code = Some(code);
        self
    }
}

/// One mail the server accepted.
#[derive(Debug, Clone, Deserialize)]
pub struct Received {
    /// The envelope sender (MAIL FROM).
    pub mail_from: String,
    /// The envelope recipients (RCPT TO).
    pub rcpt_tos: Vec<String>,
    /// Whether the session was encrypted when the mail arrived.
    pub tls: bool,
    /// The login the client authenticated as, if it did.
    pub auth_login: Option<String>,
    /// The raw mail: headers and body, as sent.
    pub content: String,
}

impl Received {
    /// The mail, parsed.
    pub fn mail(&self) -> Mail {
        Mail::parse(&self.content)
    }
}

/// The running server; killed when dropped (and it exits by itself when its stdin closes).
pub struct SmtpServer {
    child: Child,
    _stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    port: u16,
    _dir: TempDir,
}

impl SmtpServer {
    /// Starts the server and waits until it listens (it prints its port first).
    pub async fn start(options: ServerOptions) -> Self {
        let dir = TempDir::new().unwrap();
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let mut command = Command::new(&python);
        command.arg(SCRIPT).arg(dir.path());
        if let Some((cert, key)) = &options.tls {
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        if options.implicit_tls {
            command.arg("--implicit-tls");
        }
        if let Some((user, password)) = &options.auth {
            command.arg("--auth").arg(format!("{user}:{password}"));
        }
        if let Some(code) = options.reject_code {
            command.arg("--reject-code").arg(code.to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python} {SCRIPT}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = next_line(&mut stdout).await.unwrap_or_else(|| {
            panic!("{SCRIPT} exited before listening: is aiosmtpd installed? (python3 -m pip install aiosmtpd==1.4.6, or run ./test.sh, which installs every tool the tests need; see its stderr above)")
        });
        let port = first
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SCRIPT} printed {first:?} instead of its port"));
        Self {
            child,
            _stdin: stdin,
            stdout,
            port,
            _dir: dir,
        }
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits for the next mail the server accepts (it announces each one on stdout).
    pub async fn next_message(&mut self) -> Received {
        let line = next_line(&mut self.stdout)
            .await
            .expect("the SMTP server exited instead of receiving a mail");
        let path = line
            .strip_prefix("received ")
            .unwrap_or_else(|| panic!("unexpected line from the SMTP server: {line:?}"));
        let json = std::fs::read_to_string(Path::new(path)).unwrap();
        serde_json::from_str(&json).unwrap()
    }

    /// Waits for the next `n` mails.
    pub async fn wait_for(&mut self, n: usize) -> Vec<Received> {
        let mut received = Vec::with_capacity(n);
        for _ in 0..n {
            received.push(self.next_message().await);
        }
        received
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> Option<String> {
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the SMTP server said nothing for 30s")
        .expect("reading the SMTP server's stdout")
}

/// A MIME entity: a whole mail or one of its parts.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Header names and unfolded raw values, in order.
    pub headers: Vec<(String, String)>,
    /// The body as sent (still transfer-encoded), with `\n` line ends.
    pub body: String,
}

impl Mail {
    /// Parses headers and body; line ends are normalised to `\n`.
    pub fn parse(raw: &str) -> Self {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = headers.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        Self {
            headers,
            body: body.to_owned(),
        }
    }

    /// The raw (still RFC 2047-encoded) value of the first header called `name`.
    pub fn raw_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The decoded value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.raw_header(name).map(decode_words)
    }

    /// The MIME type (`text/plain`), lowercase, without parameters.
    pub fn mime_type(&self) -> String {
        self.raw_header("Content-Type")
            .unwrap_or("text/plain")
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    /// A parameter of the Content-Type header (`boundary`, `charset`).
    pub fn content_type_param(&self, param: &str) -> Option<String> {
        let value = self.raw_header("Content-Type")?;
        value.split(';').skip(1).find_map(|p| {
            let (key, val) = p.trim().split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case(param)
                .then(|| val.trim().trim_matches('"').to_owned())
        })
    }

    /// The parts of a multipart entity (empty for a single part).
    pub fn parts(&self) -> Vec<Mail> {
        let Some(boundary) = self.content_type_param("boundary") else {
            return Vec::new();
        };
        let delimiter = format!("--{boundary}");
        let mut parts = Vec::new();
        let mut sections = self.body.split(&delimiter).skip(1);
        for section in sections.by_ref() {
            if section.starts_with("--") {
                break;
            }
            let section = section.strip_prefix('\n').unwrap_or(section);
            let section = section.strip_suffix('\n').unwrap_or(section);
            parts.push(Mail::parse(section));
        }
        parts
    }

    /// The decoded body of the first part (at any depth) of type `mime`.
    pub fn part_text(&self, mime: &str) -> Option<String> {
        if self.mime_type() == mime {
            return Some(self.text());
        }
        self.parts().iter().find_map(|p| p.part_text(mime))
    }

    /// The body, transfer-decoded (quoted-printable, base64 or as is) as UTF-8.
    pub fn text(&self) -> String {
        let encoding = self
            .raw_header("Content-Transfer-Encoding")
            .unwrap_or("7bit")
            .to_ascii_lowercase();
        let bytes = match encoding.as_str() {
            "quoted-printable" => decode_quoted_printable(&self.body),
            "base64" => decode_base64(&self.body),
            _ => self.body.clone().into_bytes(),
        };
        String::from_utf8(bytes).expect("a part that is not UTF-8")
    }
}

/// Decodes quoted-printable (RFC 2045): `=XX` bytes and `=` soft line breaks.
pub fn decode_quoted_printable(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // A soft line break, or one left at the very end of the text.
            b'=' if matches!(bytes.get(i + 1), Some(b'\n') | None) => i += 2,
            b'=' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3).unwrap_or_default());
                let byte = hex.ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(byte.expect("bad quoted-printable escape"));
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Decodes base64 (RFC 4648), ignoring whitespace (MIME wraps its lines).
pub fn decode_base64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .unwrap_or_else(|e| panic!("bad base64 {text:?}: {e}"))
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`) in a header value;
/// whitespace between two adjacent encoded words is dropped, as the RFC says.
pub fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while !rest.is_empty() {
        let Some(start) = rest.find("=?") else {
            out.push_str(rest);
            break;
        };
        let (before, candidate) = rest.split_at(start);
        let decoded = encoded_word(candidate);
        let Some((text, len)) = decoded else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            after_word = false;
            continue;
        };
        if !(after_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        out.push_str(&text);
        rest = &candidate[len..];
        after_word = true;
    }
    out
}

/// One encoded word at the start of `s`: its text and length.
fn encoded_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (_charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let payload = &inner[..end];
    let bytes = match encoding.to_ascii_lowercase().as_str() {
        "b" => decode_base64(payload),
        "q" => decode_quoted_printable(&payload.replace('_', " ")),
        _ => return None,
    };
    let len = s.len() - inner.len() + end + 2;
    Some((String::from_utf8(bytes).ok()?, len))
}
