//! Outgoing email. Two transports: `file` (the default: each message is written as an
//! `.eml` file under `email.outbox_dir`, named after what it is, so a resend overwrites
//! rather than duplicates) and `smtp` (lettre, plain or TLS).

use std::path::PathBuf;

use jobs::StepError;
use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config;

#[derive(Clone)]
pub enum Mailer {
    File {
        dir: PathBuf,
        from: Mailbox,
    },
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mailer::File { dir, .. } => write!(f, "Mailer::File({})", dir.display()),
            Mailer::Smtp { .. } => f.write_str("Mailer::Smtp"),
        }
    }
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub to: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    /// Deterministic per payment and kind: the same logical message always has the same id.
    pub message_id: &'a str,
    /// File name (without extension) for the file transport.
    pub name: &'a str,
}

impl Mailer {
    pub fn from_config(c: &config::Email) -> anyhow::Result<Mailer> {
        let from = c.from.clone();
        Ok(match c.transport {
            config::Transport::Smtp => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(c.smtp_url.expose())
                    // The URL may hold a password: name the key, never echo the value.
                    .map_err(|e| anyhow::anyhow!("email.smtp_url: not a valid SMTP URL ({e})"))?
                    .build();
                Mailer::Smtp { transport, from }
            }
            config::Transport::File => Mailer::File {
                dir: c.outbox_dir.clone(),
                from,
            },
        })
    }

    /// Sends; returns the transport's name for the record.
    pub async fn send(&self, m: &Outgoing<'_>) -> Result<&'static str, StepError> {
        let from = match self {
            Mailer::File { from, .. } | Mailer::Smtp { from, .. } => from.clone(),
        };
        let to: Mailbox =
            m.to.parse()
                .map_err(|e| StepError::Permanent(format!("recipient {:?}: {e}", m.to)))?;
        let msg = Message::builder()
            .from(from)
            .to(to)
            .subject(m.subject)
            .message_id(Some(m.message_id.to_owned()))
            .header(ContentType::TEXT_PLAIN)
            .body(m.body.to_owned())
            .map_err(|e| StepError::Permanent(format!("building email: {e}")))?;
        match self {
            Mailer::File { dir, .. } => {
                let bytes = msg.formatted();
                let dir = dir.clone();
                let name = m.name.to_owned();
                tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &bytes))
                    .await
                    .map_err(|e| StepError::Transient(format!("outbox writer: {e}")))?
                    .map_err(|e| StepError::Transient(format!("outbox: {e}")))?;
                Ok("file")
            }
            Mailer::Smtp { transport, .. } => {
                transport.send(msg).await.map_err(|e| {
                    if e.is_permanent() {
                        StepError::Permanent(format!("smtp: {e}"))
                    } else {
                        StepError::Transient(format!("smtp: {e}"))
                    }
                })?;
                Ok("smtp")
            }
        }
    }
}

/// Writes `dir/name.eml` through a temporary file and a rename, with fsync, so a reader
/// never sees half a message and a crash never leaves one behind.
fn write_atomically(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = crate::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(format!("{name}.eml")))
}
