//! A real SMTP server on a loopback port that keeps what it receives: the sink the
//! notification tests send mail to. It speaks enough ESMTP for a client like lettre (EHLO,
//! optional STARTTLS with a test CA, AUTH, MAIL, RCPT, DATA with dot-unstuffing, RSET, QUIT).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// One message as received.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// `MAIL FROM` address.
    pub from: String,
    /// `RCPT TO` addresses.
    pub to: Vec<String>,
    /// The message (headers and body), dot-unstuffed, lines joined with `\n`.
    pub data: String,
    /// The session had switched to TLS (STARTTLS) before the message.
    pub over_tls: bool,
    /// The `AUTH` command the client sent, if any.
    pub auth: Option<String>,
}

impl ReceivedMail {
    /// The message as a reader sees it: headers, then the body decoded when it was sent
    /// quoted-printable (soft line breaks joined, `=XX` bytes restored).
    #[must_use]
    pub fn text(&self) -> String {
        let Some((headers, body)) = self.data.split_once("\n\n") else {
            return self.data.clone();
        };
        if !headers
            .to_ascii_lowercase()
            .contains("content-transfer-encoding: quoted-printable")
        {
            return self.data.clone();
        }
        let bytes = body.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
                (b'=', Some(b'\n'), _) => i += 2,
                (b'=', Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                    let hex = [h, l];
                    let text = std::str::from_utf8(&hex).unwrap_or("3F");
                    out.push(u8::from_str_radix(text, 16).unwrap_or(b'?'));
                    i += 3;
                }
                (b, _, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        format!("{headers}\n\n{}", String::from_utf8_lossy(&out))
    }
}

/// A running sink. It stops when dropped (its task is aborted).
pub struct SmtpSink {
    /// The port on 127.0.0.1.
    pub port: u16,
    /// With STARTTLS: the PEM of the CA that signed the sink's `localhost` certificate.
    pub ca_pem: Option<String>,
    received: Arc<Mutex<Vec<ReceivedMail>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Next {
    Done,
    StartTls,
}

impl SmtpSink {
    /// Starts a sink; with `starttls`, it offers STARTTLS with a certificate for `localhost`
    /// signed by a fresh CA ([`SmtpSink::ca_pem`]).
    ///
    /// # Panics
    /// When no loopback port can be bound or the certificates cannot be made.
    pub async fn start(starttls: bool) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (acceptor, ca_pem) = if starttls {
            let (acceptor, ca) = tls_acceptor();
            (Some(acceptor), Some(ca))
        } else {
            (None, None)
        };
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let sink = Arc::clone(&sink);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = session(conn, acceptor, sink).await;
                });
            }
        });
        SmtpSink {
            port,
            ca_pem,
            received,
            task,
        }
    }

    /// What was received so far.
    ///
    /// # Panics
    /// When the lock is poisoned.
    #[must_use]
    pub fn received(&self) -> Vec<ReceivedMail> {
        self.received.lock().expect("lock").clone()
    }

    /// Waits until `n` messages arrived (or `timeout` passed) and returns what arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || tokio::time::Instant::now() >= until {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn tls_acceptor() -> (TlsAcceptor, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "weir test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("cert");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    (TlsAcceptor::from(Arc::new(config)), ca.pem())
}

async fn session(
    conn: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    sink: Arc<Mutex<Vec<ReceivedMail>>>,
) -> std::io::Result<()> {
    let mut plain = BufReader::new(conn);
    plain
        .get_mut()
        .write_all(b"220 localhost weir test sink\r\n")
        .await?;
    if let Next::StartTls = dialogue(&mut plain, tls.is_some(), false, &sink).await?
        && let Some(acceptor) = tls
    {
        let secure = acceptor.accept(plain.into_inner()).await?;
        dialogue(&mut BufReader::new(secure), false, true, &sink).await?;
    }
    Ok(())
}

async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    offer_tls: bool,
    over_tls: bool,
    sink: &Mutex<Vec<ReceivedMail>>,
) -> std::io::Result<Next> {
    let (mut from, mut to, mut auth) = (String::new(), Vec::new(), None);
    let mut line = String::new();
    loop {
        line.clear();
        if s.read_line(&mut line).await? == 0 {
            return Ok(Next::Done);
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            let tls = if offer_tls { "250-STARTTLS\r\n" } else { "" };
            format!("250-localhost\r\n{tls}250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            "250 ok\r\n".into()
        } else if upper == "STARTTLS" && offer_tls {
            s.get_mut().write_all(b"220 go ahead\r\n").await?;
            return Ok(Next::StartTls);
        } else if upper.starts_with("AUTH") {
            auth = Some(command.clone());
            "235 accepted\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&command["MAIL FROM:".len()..]);
            "250 ok\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            to.push(address(&command["RCPT TO:".len()..]));
            "250 ok\r\n".into()
        } else if upper == "DATA" {
            s.get_mut().write_all(b"354 end with .\r\n").await?;
            let mut data = Vec::new();
            loop {
                line.clear();
                if s.read_line(&mut line).await? == 0 {
                    return Ok(Next::Done);
                }
                let text = line.trim_end_matches(['\r', '\n']);
                if text == "." {
                    break;
                }
                data.push(text.strip_prefix('.').unwrap_or(text).to_owned());
            }
            sink.lock().expect("lock").push(ReceivedMail {
                from: std::mem::take(&mut from),
                to: std::mem::take(&mut to),
                data: data.join("\n"),
                over_tls,
                auth: auth.clone(),
            });
            "250 queued\r\n".into()
        } else if upper == "RSET" {
            (from, to) = (String::new(), Vec::new());
            "250 ok\r\n".into()
        } else if upper == "QUIT" {
            s.get_mut().write_all(b"221 bye\r\n").await?;
            return Ok(Next::Done);
        } else {
            "502 not implemented\r\n".into()
        };
        s.get_mut().write_all(reply.as_bytes()).await?;
    }
}

/// `<a@b>` (with optional parameters after it) → `a@b`.
fn address(arg: &str) -> String {
    let arg = arg.trim();
    match (arg.find('<'), arg.find('>')) {
        (Some(a), Some(b)) if a < b => arg[a + 1..b].to_owned(),
        _ => arg.split_whitespace().next().unwrap_or("").to_owned(),
    }
}
