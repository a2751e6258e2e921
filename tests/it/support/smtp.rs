//! A private SMTP sink per test: `tests/peers/smtp_sink.py` (aiosmtpd) on a free port, storing
//! each message as `<n>.eml` plus `<n>.json` (envelope) in a temporary directory.
//!
//! ```ignore
//! let sink = SmtpSink::start(Some(("jit", "secret"))).await;
//! // point the broker at smtp://jit:secret@127.0.0.1:{sink.port}
//! let mails = sink.wait_for(1, Duration::from_secs(10)).await;
//! assert!(mails[0].raw.contains("Subject: "));
//! ```

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::peer_env;

/// A running sink; stopped and its folder removed on drop.
#[derive(Debug)]
pub struct SmtpSink {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Where the messages land.
    pub dir: PathBuf,
    child: Child,
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Envelope sender (`MAIL FROM`).
    pub from: String,
    /// Envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The login the client authenticated as, if it did.
    pub auth: Option<String>,
    /// The message as received (RFC 5322).
    pub raw: String,
}

impl SmtpSink {
    /// Starts a sink; with `auth`, it offers AUTH PLAIN/LOGIN and accepts only that login.
    pub async fn start(auth: Option<(&str, &str)>) -> Self {
        let python = PathBuf::from(peer_env("JIT_TEST_PEERS")).join("venv/bin/python");
        let script = PathBuf::from(peer_env("JIT_TEST_ROOT")).join("tests/peers/smtp_sink.py");
        let dir = std::env::temp_dir().join(format!("jit-mails-{}", uuid::Uuid::new_v4().simple()));
        // aiosmtpd needs a real port up front; a just-freed one is good enough on loopback.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_or_else(|e| panic!("no free port: {e}"), |a| a.port());
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create `{}`: {e}", dir.display()));
        let log = dir.join("sink.log");
        let stderr = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create `{}`: {e}", log.display()));
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        if let Some((user, pass)) = auth {
            cmd.args(["--auth", &format!("{user}:{pass}")]);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", python.display()));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("sink stdout is not piped"));
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("SMTP READY") {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(ready, Ok(true)),
            "the SMTP sink did not come up on port {port}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Self { port, dir, child }
    }

    /// The messages received so far, in arrival order.
    pub fn mails(&self) -> Vec<Mail> {
        let mut out = Vec::new();
        for n in 1.. {
            let base = self.dir.join(format!("{n:05}"));
            let (Ok(meta), Ok(raw)) = (
                std::fs::read_to_string(base.with_extension("json")),
                std::fs::read(base.with_extension("eml")),
            ) else {
                break;
            };
            let meta: serde_json::Value = serde_json::from_str(&meta)
                .unwrap_or_else(|e| panic!("bad envelope file from the sink: {e}"));
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            out.push(Mail {
                from: text(&meta["mail_from"]),
                to: meta["rcpt_tos"]
                    .as_array()
                    .map_or_else(Vec::new, |a| a.iter().map(text).collect()),
                auth: meta["auth"].as_str().map(str::to_owned),
                raw: String::from_utf8_lossy(&raw).into_owned(),
            });
        }
        out
    }

    /// Waits until at least `n` messages arrived; fails the test after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mails = self.mails();
            if mails.len() >= n {
                return mails;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} mails within {timeout:?}, got {}",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn the_sink_stores_what_lettre_sends_with_auth() {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    super::init();
    let sink = SmtpSink::start(Some(("jit", "sink-pass"))).await;
    let mail = Message::builder()
        .from("jit <jit@example.com>".parse().unwrap())
        .to("bob@example.com".parse().unwrap())
        .subject("approval needed")
        .body(String::from("hello"))
        .unwrap();
    let smtp = |pass: &str| {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(sink.port)
            .credentials(Credentials::new("jit".into(), pass.into()))
            .authentication(vec![Mechanism::Plain])
            .timeout(Some(Duration::from_secs(10)))
            .build()
    };
    assert!(
        smtp("wrong").send(mail.clone()).await.is_err(),
        "a wrong password must be refused"
    );
    smtp("sink-pass").send(mail).await.unwrap();
    let mails = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].from, "jit@example.com");
    assert_eq!(mails[0].to, ["bob@example.com"]);
    assert_eq!(mails[0].auth.as_deref(), Some("jit"));
    assert!(
        mails[0].raw.contains("Subject: approval needed"),
        "{}",
        mails[0].raw
    );
}
