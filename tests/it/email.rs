//! The email target against a real SMTP server (aiosmtpd, tests/support/smtp_server.py) on
//! loopback: plain delivery with its headers and text and HTML parts, STARTTLS with AUTH and
//! implicit TLS against a test CA, digests as one mail, HTML escaping, and how failures map
//! to `SendError` (5xx permanent; 4xx, refused connection, untrusted certificate, missing
//! STARTTLS and timeouts retryable), without ever showing the password.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use klaxon::notify::email::{self, EmailSender, EmailSettings, SmtpSecurity};
use klaxon::notify::template::{DEFAULT_FUEL, Template};
use klaxon::notify::{Disposition, Notice, SendError};
use klaxon::rules::{Alert, AlertContext, Severity};
use klaxon::secret::Secret;
use support::smtp::{Mail, Pki, Received, ServerOptions, SmtpServer};

fn alert(title: &str, audit_id: &str) -> Alert {
    Alert {
        rule: "exec-into-pod".to_owned(),
        attack: vec!["T1609".to_owned(), "T1552.007".to_owned()],
        severity: Severity::Warning,
        title: title.to_owned(),
        text: "Someone opened a shell\nin a production pod.".to_owned(),
        fields: BTreeMap::from([
            ("container".to_owned(), "web".to_owned()),
            (
                "command".to_owned(),
                "/bin/sh -c 'id && cat /etc/passwd'".to_owned(),
            ),
        ]),
        labels: BTreeMap::new(),
        dedup_key: String::new(),
        group_key: "exec-into-pod/payments".to_owned(),
        targets: Vec::new(),
        suppressed: 0,
        context: AlertContext {
            cluster: "prod-eu".to_owned(),
            event_time: "2024-05-01T12:00:00.123456Z".to_owned(),
            audit_id: audit_id.to_owned(),
            stage: "ResponseComplete".to_owned(),
            user: "alice@example.com".to_owned(),
            impersonated_user: "system:admin".to_owned(),
            verb: "create".to_owned(),
            object: "pods/exec payments/web-7d9f".to_owned(),
            namespace: "payments".to_owned(),
            source_ips: vec!["10.0.0.7".to_owned(), "192.0.2.10".to_owned()],
            user_agent: "kubectl/v1.30".to_owned(),
            response_code: 101,
        },
    }
}

fn settings(port: u16, security: SmtpSecurity) -> EmailSettings {
    EmailSettings {
        host: "localhost".to_owned(),
        port,
        security,
        username: None,
        password: None,
        from: "Klaxon <klaxon@example.org>".parse().unwrap(),
        to: vec![
            "Ops Team <ops@example.org>".parse().unwrap(),
            "security@example.org".parse().unwrap(),
        ],
        cc: vec!["audit@example.net".parse().unwrap()],
        subject: Template::compile("[{{ severity }}] {{ title }}", DEFAULT_FUEL).unwrap(),
        ca_file: None,
        timeout: Duration::from_secs(10),
    }
}

fn with_auth(mut settings: EmailSettings, user: &str, password: &str) -> EmailSettings {
    settings.username = Some(user.to_owned());
    settings.password = Some(Secret::new(password));
    settings
}

async fn send(settings: EmailSettings, notice: &Notice) -> Result<(), SendError> {
    EmailSender::new(settings).unwrap().send(notice).await
}

fn smtp_error(result: Result<(), SendError>) -> (bool, String) {
    match result {
        Err(SendError::Smtp { permanent, reason }) => (permanent, reason),
        other => panic!("expected an SMTP error, got {other:?}"),
    }
}

/// The text and HTML parts of a received mail, checking it is multipart/alternative.
fn parts(received: &Received) -> (Mail, String, String) {
    let mail = received.mail();
    assert_eq!(
        mail.mime_type(),
        "multipart/alternative",
        "{}",
        received.content
    );
    let types: Vec<String> = mail.parts().iter().map(Mail::mime_type).collect();
    assert_eq!(types, ["text/plain", "text/html"]);
    let text = mail.part_text("text/plain").unwrap();
    let html = mail.part_text("text/html").unwrap();
    (mail, text, html)
}

#[tokio::test]
async fn plain_delivery_has_headers_and_both_parts_with_the_alert() {
    let mut server = SmtpServer::start(ServerOptions::plain()).await;
    let mut one = alert("Shell opened in payments/web-7d9f", "audit-1");
    one.suppressed = 4;
    let notice = Notice::single("mail", one);

    send(settings(server.port(), SmtpSecurity::None), &notice)
        .await
        .unwrap();

    let received = server.next_message().await;
    assert!(!received.tls);
    assert_eq!(received.auth_login, None);
    assert_eq!(received.mail_from, "klaxon@example.org");
    let mut rcpt = received.rcpt_tos.clone();
    rcpt.sort();
    assert_eq!(
        rcpt,
        [
            "audit@example.net",
            "ops@example.org",
            "security@example.org"
        ]
    );

    let (mail, text, html) = parts(&received);
    assert_eq!(mail.header("From").unwrap(), "Klaxon <klaxon@example.org>");
    assert_eq!(
        mail.header("To").unwrap(),
        "\"Ops Team\" <ops@example.org>, security@example.org"
    );
    assert_eq!(mail.header("Cc").unwrap(), "audit@example.net");
    assert_eq!(
        mail.header("Subject").unwrap(),
        "[warning] Shell opened in payments/web-7d9f"
    );
    assert_eq!(mail.header("X-Klaxon-Rule").unwrap(), "exec-into-pod");
    assert_eq!(mail.header("X-Klaxon-Severity").unwrap(), "warning");
    assert_eq!(mail.header("X-Klaxon-Attack").unwrap(), "T1552.007, T1609");
    assert!(
        mail.header("Message-ID")
            .unwrap()
            .ends_with("@example.org>")
    );
    assert!(mail.header("Date").is_some());

    for expected in [
        "[WARNING] Shell opened in payments/web-7d9f",
        "Someone opened a shell\nin a production pod.",
        "container: web",
        "command: /bin/sh -c 'id && cat /etc/passwd'",
        "Rule: exec-into-pod",
        "ATT&CK: T1609, T1552.007",
        "Action: create pods/exec payments/web-7d9f",
        "User: alice@example.com (as system:admin)",
        "Source IPs: 10.0.0.7, 192.0.2.10",
        "Cluster: prod-eu",
        "Event time: 2024-05-01T12:00:00.123456Z",
        "Audit ID: audit-1",
        "4 similar alerts suppressed",
    ] {
        assert!(
            text.contains(expected),
            "text part lacks {expected:?}:\n{text}"
        );
    }
    for expected in [
        "Shell opened in payments/web-7d9f</h2>",
        "Someone opened a shell\nin a production pod.",
        ">container</th>",
        ">web</td>",
        // Escaped: the command comes from the audit event.
        ">/bin/sh -c &#39;id &amp;&amp; cat /etc/passwd&#39;</td>",
        ">alice@example.com (as system:admin)</td>",
        ">10.0.0.7, 192.0.2.10</td>",
        ">prod-eu</td>",
        ">2024-05-01T12:00:00.123456Z</td>",
        ">audit-1</td>",
        "4 similar alerts suppressed",
        // Each technique links to its page; a sub-technique to its own.
        ">ATT&amp;CK</th>",
        "<a href=\"https://attack.mitre.org/techniques/T1609/\">T1609</a>, \
         <a href=\"https://attack.mitre.org/techniques/T1552/007/\">T1552.007</a></td>",
    ] {
        assert!(
            html.contains(expected),
            "HTML part lacks {expected:?}:\n{html}"
        );
    }
}

#[tokio::test]
async fn starttls_with_auth_delivers_over_a_verified_tls_session() {
    let pki = Pki::generate();
    let mut server =
        SmtpServer::start(ServerOptions::starttls(&pki).with_auth("klaxon", "s3cret pass")).await;
    let mut settings = with_auth(
        settings(server.port(), SmtpSecurity::Starttls),
        "klaxon",
        "s3cret pass",
    );
    settings.ca_file = Some(pki.ca.clone());
    let sender = EmailSender::new(settings).unwrap();

    // Two sends through one sender: the second goes through the pool.
    sender
        .send(&Notice::single("mail", alert("first", "audit-1")))
        .await
        .unwrap();
    sender
        .send(&Notice::single("mail", alert("second", "audit-2")))
        .await
        .unwrap();

    let received = server.wait_for(2).await;
    for (mail, title) in received.iter().zip(["first", "second"]) {
        assert!(mail.tls, "mail sent without TLS");
        assert_eq!(mail.auth_login.as_deref(), Some("klaxon"));
        assert_eq!(
            mail.mail().header("Subject").unwrap(),
            format!("[warning] {title}")
        );
    }
}

#[tokio::test]
async fn implicit_tls_with_auth_delivers() {
    let pki = Pki::generate();
    let mut server =
        SmtpServer::start(ServerOptions::implicit_tls(&pki).with_auth("klaxon", "pw")).await;
    let mut settings = with_auth(
        settings(server.port(), SmtpSecurity::Implicit),
        "klaxon",
        "pw",
    );
    settings.ca_file = Some(pki.ca.clone());

    send(settings, &Notice::single("mail", alert("smtps", "audit-1")))
        .await
        .unwrap();

    let received = server.next_message().await;
    assert!(received.tls);
    assert_eq!(received.auth_login.as_deref(), Some("klaxon"));
}

#[tokio::test]
async fn a_digest_is_one_mail_listing_every_alert() {
    let mut server = SmtpServer::start(ServerOptions::plain()).await;
    let mut alerts = vec![
        alert("pod wéb-1 créé ✓", "audit-a"),
        alert("pod web-2 created", "audit-b"),
        alert("pod web-3 created", "audit-c"),
    ];
    alerts[1].severity = Severity::Critical;
    alerts[2].rule = "other-rule".to_owned();
    let notice = Notice {
        target: "mail".to_owned(),
        group_key: "exec-into-pod/payments".to_owned(),
        alerts,
    };
    let mut settings = settings(server.port(), SmtpSecurity::None);
    settings.subject = Template::compile(
        "{{ count }} alerts in {{ group_key }}: {{ title }}",
        DEFAULT_FUEL,
    )
    .unwrap();

    send(settings, &notice).await.unwrap();

    let received = server.next_message().await;
    let (mail, text, html) = parts(&received);
    assert_eq!(
        mail.header("Subject").unwrap(),
        "3 alerts in exec-into-pod/payments: 3 alerts: pod wéb-1 créé ✓ (+2 more)"
    );
    assert_eq!(
        mail.header("X-Klaxon-Rule").unwrap(),
        "exec-into-pod, other-rule"
    );
    assert_eq!(mail.header("X-Klaxon-Severity").unwrap(), "critical");
    assert!(
        text.contains("3 alerts, highest severity critical"),
        "{text}"
    );
    for (i, (title, audit_id)) in [
        ("pod wéb-1 créé ✓", "audit-a"),
        ("pod web-2 created", "audit-b"),
        ("pod web-3 created", "audit-c"),
    ]
    .into_iter()
    .enumerate()
    {
        assert!(text.contains(&format!("--- {} of 3 ---", i + 1)), "{text}");
        assert!(text.contains(title), "text lacks {title}:\n{text}");
        assert!(text.contains(&format!("Audit ID: {audit_id}")), "{text}");
        assert!(
            html.contains(&format!("{title}</h2>")),
            "HTML lacks {title}:\n{html}"
        );
        assert!(html.contains(&format!(">{audit_id}</td>")), "{html}");
    }
    assert!(text.contains("[CRITICAL] pod web-2 created"), "{text}");
    // Non-ASCII text survives the header and body encodings.
    assert!(mail.raw_header("Subject").unwrap().contains("=?utf-8?"));
    assert!(text.contains("Rule: other-rule"), "{text}");
}

#[tokio::test]
async fn html_escapes_what_comes_from_alerts() {
    let mut server = SmtpServer::start(ServerOptions::plain()).await;
    let mut hostile = alert("<script>alert(1)</script> & more", "audit-1");
    hostile.text = "<img src=x onerror=\"steal()\">".to_owned();
    hostile.context.user = "<b>mallory</b>".to_owned();
    hostile
        .fields
        .insert("<th>key".to_owned(), "</td><td>value".to_owned());

    send(
        settings(server.port(), SmtpSecurity::None),
        &Notice::single("mail", hostile),
    )
    .await
    .unwrap();

    let received = server.next_message().await;
    let (mail, text, html) = parts(&received);
    for raw in [
        "<script>",
        "<img",
        "<b>mallory",
        "<th>key",
        "</td><td>value",
    ] {
        assert!(
            !html.contains(raw),
            "HTML contains unescaped {raw:?}:\n{html}"
        );
    }
    for escaped in [
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more</h2>",
        "&lt;img src=x onerror=&quot;steal()&quot;&gt;",
        "&lt;b&gt;mallory&lt;/b&gt;",
        "&lt;th&gt;key",
        "&lt;/td&gt;&lt;td&gt;value",
    ] {
        assert!(html.contains(escaped), "HTML lacks {escaped:?}:\n{html}");
    }
    // The text part and the subject are not HTML: they keep the title as it is.
    assert!(text.contains("<script>alert(1)</script> & more"), "{text}");
    assert_eq!(
        mail.header("Subject").unwrap(),
        "[warning] <script>alert(1)</script> & more"
    );
}

#[tokio::test]
async fn a_550_answer_is_a_permanent_smtp_error() {
    let server = SmtpServer::start(ServerOptions::plain().rejecting(550)).await;
    let result = send(
        settings(server.port(), SmtpSecurity::None),
        &Notice::single("mail", alert("refused", "audit-1")),
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Permanent);
    let (permanent, reason) = smtp_error(Err(err));
    assert!(permanent);
    assert!(reason.contains("550"), "{reason}");
    assert!(reason.contains("rejected by test server"), "{reason}");
}

#[tokio::test]
async fn a_451_answer_is_a_transient_smtp_error() {
    let server = SmtpServer::start(ServerOptions::plain().rejecting(451)).await;
    let result = send(
        settings(server.port(), SmtpSecurity::None),
        &Notice::single("mail", alert("later", "audit-1")),
    )
    .await;
    let (permanent, reason) = smtp_error(result);
    assert!(!permanent);
    assert!(reason.contains("451"), "{reason}");
}

#[tokio::test]
async fn a_closed_port_is_a_retryable_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);

    let result = send(
        settings(port, SmtpSecurity::None),
        &Notice::single("mail", alert("nobody home", "audit-1")),
    )
    .await;
    let err = result.unwrap_err();
    assert!(matches!(err.disposition(), Disposition::Retry { .. }));
    let (permanent, _) = smtp_error(Err(err));
    assert!(!permanent);
}

#[tokio::test]
async fn an_untrusted_certificate_fails_and_sends_nothing() {
    let pki = Pki::generate();
    let mut server = SmtpServer::start(ServerOptions::starttls(&pki)).await;

    // No ca_file: the test CA is not trusted, so the handshake must fail.
    let result = send(
        settings(server.port(), SmtpSecurity::Starttls),
        &Notice::single("mail", alert("untrusted", "audit-1")),
    )
    .await;
    let (permanent, reason) = smtp_error(result);
    assert!(!permanent);
    assert!(
        reason.to_lowercase().contains("certificate"),
        "not a certificate error: {reason}"
    );

    // The same server with the CA trusted: the first mail it receives is this one.
    let mut trusted = settings(server.port(), SmtpSecurity::Starttls);
    trusted.ca_file = Some(pki.ca.clone());
    send(
        trusted,
        &Notice::single("mail", alert("trusted", "audit-2")),
    )
    .await
    .unwrap();
    let received = server.next_message().await;
    assert_eq!(
        received.mail().header("Subject").unwrap(),
        "[warning] trusted"
    );
}

#[tokio::test]
async fn starttls_refuses_to_send_in_clear_to_a_server_without_it() {
    let mut server = SmtpServer::start(ServerOptions::plain()).await;

    let result = send(
        settings(server.port(), SmtpSecurity::Starttls),
        &Notice::single("mail", alert("must be encrypted", "audit-1")),
    )
    .await;
    let (permanent, reason) = smtp_error(result);
    assert!(!permanent);
    assert!(reason.to_lowercase().contains("starttls"), "{reason}");

    // The server received nothing before this plain mail.
    send(
        settings(server.port(), SmtpSecurity::None),
        &Notice::single("mail", alert("plain", "audit-2")),
    )
    .await
    .unwrap();
    let received = server.next_message().await;
    assert_eq!(
        received.mail().header("Subject").unwrap(),
        "[warning] plain"
    );
}

#[tokio::test]
async fn a_wrong_password_is_permanent_and_never_shown() {
    let pki = Pki::generate();
    let server =
        SmtpServer::start(ServerOptions::starttls(&pki).with_auth("klaxon", "right")).await;
    let password = "wrong-Pa55word";
    let mut settings = with_auth(
        settings(server.port(), SmtpSecurity::Starttls),
        "klaxon",
        password,
    );
    settings.ca_file = Some(pki.ca.clone());
    let sender = EmailSender::new(settings.clone()).unwrap();

    let err = sender
        .send(&Notice::single("mail", alert("auth", "audit-1")))
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?} {sender:?} {settings:?}");
    assert!(!shown.contains(password), "password shown: {shown}");
    let (permanent, reason) = smtp_error(Err(err));
    assert!(permanent, "{reason}");
    assert!(reason.contains("535"), "{reason}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_retryable() {
    // Accepts the connection but never sends its greeting.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
        drop(socket);
    });
    let mut settings = settings(port, SmtpSecurity::None);
    settings.timeout = Duration::from_millis(300);

    let (permanent, reason) = smtp_error(
        send(
            settings,
            &Notice::single("mail", alert("silent", "audit-1")),
        )
        .await,
    );
    held.abort();
    assert!(!permanent);
    assert!(reason.contains("timed out"), "{reason}");
}

#[test]
fn a_subject_template_error_is_a_render_error() {
    let mut settings = settings(25, SmtpSecurity::None);
    settings.subject = Template::compile("{{ no_such_variable }}", DEFAULT_FUEL).unwrap();
    let err = email::message(&settings, &Notice::single("mail", alert("t", "a"))).unwrap_err();
    assert!(matches!(err, SendError::Render(_)), "{err:?}");
    assert_eq!(err.disposition(), Disposition::Permanent);
}

#[test]
fn a_subject_is_one_line_and_falls_back_to_the_title() {
    let mut settings = settings(25, SmtpSecurity::None);
    settings.subject = Template::compile("a\r\nBcc: evil@example.com", DEFAULT_FUEL).unwrap();
    let notice = Notice::single("mail", alert("the title", "a"));
    let mail = Mail::parse(
        &String::from_utf8(email::message(&settings, &notice).unwrap().formatted()).unwrap(),
    );
    assert_eq!(mail.header("Subject").unwrap(), "a Bcc: evil@example.com");
    assert_eq!(mail.header("Bcc"), None);

    settings.subject = Template::compile("{{ '' }}", DEFAULT_FUEL).unwrap();
    let mail = Mail::parse(
        &String::from_utf8(email::message(&settings, &notice).unwrap().formatted()).unwrap(),
    );
    assert_eq!(mail.header("Subject").unwrap(), "the title");
}

#[test]
fn the_message_id_is_stable_across_attempts_at_one_notice() {
    let settings = settings(25, SmtpSecurity::None);
    let id = |notice: &Notice| {
        let message = email::message(&settings, notice).unwrap();
        Mail::parse(&String::from_utf8(message.formatted()).unwrap())
            .header("Message-ID")
            .unwrap()
    };
    let notice = Notice::single("mail", alert("t", "audit-1"));
    assert_eq!(id(&notice), id(&notice.clone()));
    assert_ne!(
        id(&notice),
        id(&Notice::single("mail", alert("t", "audit-2")))
    );
}

#[test]
fn bad_settings_are_refused_with_a_reason() {
    let mut no_recipient = settings(25, SmtpSecurity::Starttls);
    no_recipient.to.clear();
    let err = EmailSender::new(no_recipient).unwrap_err();
    assert!(err.contains("`to`"), "{err}");

    let mut missing_ca = settings(25, SmtpSecurity::Starttls);
    missing_ca.ca_file = Some("/nonexistent/ca.pem".into());
    let err = EmailSender::new(missing_ca).unwrap_err();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");

    let dir = tempfile::TempDir::new().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let mut bad_ca = settings(25, SmtpSecurity::Implicit);
    bad_ca.ca_file = Some(not_pem);
    let err = EmailSender::new(bad_ca).unwrap_err();
    assert!(err.contains("no PEM certificate"), "{err}");
}

#[test]
fn security_reads_lowercase_names() {
    for (name, security) in [
        ("starttls", SmtpSecurity::Starttls),
        ("implicit", SmtpSecurity::Implicit),
        ("none", SmtpSecurity::None),
    ] {
        let parsed: SmtpSecurity = serde_json::from_str(&format!("\"{name}\"")).unwrap();
        assert_eq!(parsed, security);
        assert_eq!(
            serde_json::to_string(&security).unwrap(),
            format!("\"{name}\"")
        );
    }
    assert!(serde_json::from_str::<SmtpSecurity>("\"ssl\"").is_err());
}

#[test]
fn a_sender_used_in_a_runtime_can_be_dropped_outside_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sender = runtime.block_on(async {
        let mut server = SmtpServer::start(ServerOptions::plain()).await;
        let sender = EmailSender::new(settings(server.port(), SmtpSecurity::None)).unwrap();
        sender
            .send(&Notice::single("mail", alert("pooled", "audit-1")))
            .await
            .unwrap();
        let received = server.next_message().await;
        assert_eq!(
            received.mail().header("Subject").unwrap(),
            "[warning] pooled"
        );
        sender
    });
    drop(runtime);
    // The pool holds a connection; dropping it here, with no runtime, must not panic.
    drop(sender);
}

#[tokio::test]
async fn an_alert_without_techniques_has_no_attack_row_or_header() {
    let mut server = SmtpServer::start(ServerOptions::plain()).await;
    let mut bare = alert("Shell opened in payments/web-7d9f", "audit-9");
    bare.attack.clear();
    send(
        settings(server.port(), SmtpSecurity::None),
        &Notice::single("mail", bare),
    )
    .await
    .unwrap();
    let received = server.next_message().await;
    let (mail, text, html) = parts(&received);
    assert_eq!(mail.header("X-Klaxon-Attack"), None);
    assert!(!text.contains("ATT&CK"), "{text}");
    assert!(!html.contains("ATT&amp;CK"), "{html}");
    assert!(text.contains("Rule: exec-into-pod"), "{text}");
}
