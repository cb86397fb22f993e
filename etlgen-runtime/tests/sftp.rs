//! The SFTP client against an in-process SFTP server (russh's server side, in memory):
//! host-key pinning, password login, listing, reading, writing, and the poller on top.
//! Built only with the `sftp` feature (`required-features` in Cargo.toml).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use etlgen_runtime::config::{Config, SftpConfig};
use etlgen_runtime::kinds::sources::{Hooks, SftpPoller};
use etlgen_runtime::ports::{QualtricsApi, Services, Sftp, Unconfigured};
use etlgen_runtime::runner::Runner;
use etlgen_runtime::sftp::SftpClient;
use etlgen_runtime::testing::{MemoryNotifications, MemoryObjectStore, MemoryQueue, sqs_message};
use russh::keys::HashAlg;
use russh::server::{Auth, ChannelOpenHandle, Msg, Server as _, Session};
use russh::{Channel, ChannelId};
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};

/// A test-only host key; it protects nothing.
const HOST_KEY: &str = include_str!("fixtures/sftp-test-host-key");

type Files = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

#[derive(Clone)]
struct Server(Files);

impl russh::server::Server for Server {
    type Handler = Ssh;
    fn new_client(&mut self, _: Option<SocketAddr>) -> Ssh {
        Ssh {
            files: self.0.clone(),
            channels: HashMap::new(),
        }
    }
}

struct Ssh {
    files: Files,
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl russh::server::Handler for Ssh {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(if (user, password) == ("acme", "pw") {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match (name, self.channels.remove(&id)) {
            ("sftp", Some(channel)) => {
                session.channel_success(id)?;
                russh_sftp::server::run(
                    channel.into_stream(),
                    Fs {
                        files: self.files.clone(),
                        listed: false,
                    },
                )
                .await;
            }
            _ => session.channel_failure(id)?,
        }
        Ok(())
    }
}

struct Fs {
    files: Files,
    listed: bool,
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

fn attrs(len: usize) -> FileAttributes {
    let mut attrs = FileAttributes {
        size: Some(len as u64),
        mtime: Some(1_714_550_400),
        permissions: Some(0o644),
        ..FileAttributes::empty()
    };
    attrs.set_regular(true);
    attrs
}

impl russh_sftp::server::Handler for Fs {
    type Error = StatusCode;

    fn unimplemented(&self) -> StatusCode {
        StatusCode::OpUnsupported
    }

    async fn init(&mut self, _: u32, _: HashMap<String, String>) -> Result<Version, StatusCode> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        path: String,
        flags: OpenFlags,
        _: FileAttributes,
    ) -> Result<Handle, StatusCode> {
        let mut files = self.files.lock().unwrap();
        if flags.contains(OpenFlags::CREATE) {
            files.insert(path.clone(), Vec::new());
        } else if !files.contains_key(&path) {
            return Err(StatusCode::NoSuchFile);
        }
        Ok(Handle { id, handle: path })
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, StatusCode> {
        let files = self.files.lock().unwrap();
        let body = files.get(&handle).ok_or(StatusCode::NoSuchFile)?;
        let start = offset as usize;
        if start >= body.len() {
            return Err(StatusCode::Eof);
        }
        let end = (start + len as usize).min(body.len());
        Ok(Data {
            id,
            data: body[start..end].to_vec(),
        })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, StatusCode> {
        let mut files = self.files.lock().unwrap();
        let body = files.get_mut(&handle).ok_or(StatusCode::NoSuchFile)?;
        body.truncate(offset as usize);
        body.extend_from_slice(&data);
        Ok(ok(id))
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, StatusCode> {
        let files = self.files.lock().unwrap();
        Ok(Attrs {
            id,
            attrs: attrs(files.get(&handle).map_or(0, Vec::len)),
        })
    }

    async fn close(&mut self, id: u32, _: String) -> Result<Status, StatusCode> {
        Ok(ok(id))
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, StatusCode> {
        let mut files = self.files.lock().unwrap();
        files.remove(&filename).ok_or(StatusCode::NoSuchFile)?;
        Ok(ok(id))
    }

    /// As OpenSSH's SFTP v3 server: only to a name that is free.
    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, StatusCode> {
        let mut files = self.files.lock().unwrap();
        if files.contains_key(&newpath) {
            return Err(StatusCode::Failure);
        }
        let body = files.remove(&oldpath).ok_or(StatusCode::NoSuchFile)?;
        files.insert(newpath, body);
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, StatusCode> {
        self.listed = false;
        Ok(Handle { id, handle: path })
    }

    async fn readdir(&mut self, id: u32, dir: String) -> Result<Name, StatusCode> {
        if std::mem::replace(&mut self.listed, true) {
            return Err(StatusCode::Eof);
        }
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let files = self.files.lock().unwrap();
        let listed = files
            .iter()
            .filter_map(|(path, body)| {
                path.strip_prefix(&prefix)
                    .map(|name| File::new(name, attrs(body.len())))
            })
            .collect();
        Ok(Name { id, files: listed })
    }
}

async fn start(files: &[(&str, &str)]) -> (SftpConfig, Files) {
    let files: Files = Arc::new(Mutex::new(
        files
            .iter()
            .map(|(p, b)| ((*p).to_owned(), b.as_bytes().to_vec()))
            .collect(),
    ));
    let key = russh::keys::decode_secret_key(HOST_KEY, None).unwrap();
    let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
    let config = Arc::new(russh::server::Config {
        keys: vec![key],
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut server = Server(files.clone());
    tokio::spawn(async move { server.run_on_socket(config, &listener).await });
    let config = SftpConfig {
        host: "127.0.0.1".into(),
        port,
        user: "acme".into(),
        secret_id: "s".into(),
        host_key_sha256: fingerprint,
    };
    (config, files)
}

#[tokio::test]
async fn lists_reads_and_writes_over_a_pinned_host_key() {
    let (config, files) = start(&[
        ("/outbox/a.csv", "id\n1\n"),
        ("/outbox/b.csv", "id\n2\n"),
        ("/other/c.csv", "x"),
    ])
    .await;
    let client = SftpClient::new(config, r#"{"password":"pw"}"#).unwrap();
    let mut listed = client.list("/outbox").await.unwrap();
    listed.sort_by(|a, b| a.path.cmp(&b.path));
    let paths: Vec<_> = listed.iter().map(|f| (f.path.as_str(), f.size)).collect();
    assert_eq!(paths, [("/outbox/a.csv", 5), ("/outbox/b.csv", 5)]);
    assert_eq!(
        client.read("/outbox/a.csv").await.unwrap(),
        Bytes::from_static(b"id\n1\n")
    );
    client
        .write("/inbox/result.zip", Bytes::from_static(b"PK-bytes"))
        .await
        .unwrap();
    assert_eq!(
        files
            .lock()
            .unwrap()
            .get("/inbox/result.zip")
            .map(Vec::as_slice),
        Some(&b"PK-bytes"[..])
    );
    // The streaming forms move the same bytes, in several of the server's packets.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let written = client
        .write_stream(
            "/inbox/big.bin",
            Box::pin(std::io::Cursor::new(big.clone())),
        )
        .await
        .unwrap();
    assert_eq!(written, big.len() as u64);
    let mut read = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(
        &mut client.open("/inbox/big.bin").await.unwrap(),
        &mut read,
    )
    .await
    .unwrap();
    assert!(
        read == big,
        "streamed back {} of {} bytes",
        read.len(),
        big.len()
    );
}

/// A reader that gives `good` bytes, then fails, as an export's download cut off midway.
struct CutOff {
    good: usize,
}

impl tokio::io::AsyncRead for CutOff {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.good == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("connection reset")));
        }
        let n = self.good.min(buf.remaining()).min(8192);
        buf.put_slice(&vec![b'x'; n]);
        self.good -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

/// A stream that fails midway leaves the file the client picks up as it was (here, the
/// last export), never truncated; the retry replaces it whole.
#[tokio::test]
async fn a_stream_cut_off_midway_leaves_no_partial_file_at_its_path() {
    let (config, files) = start(&[("/outbox/responses.zip", "last week's export")]).await;
    let client = SftpClient::new(config, r#"{"password":"pw"}"#).unwrap();
    let err = client
        .write_stream("/outbox/responses.zip", Box::pin(CutOff { good: 100_000 }))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        files.lock().unwrap()["/outbox/responses.zip"],
        b"last week's export"
    );
    assert!(
        !files
            .lock()
            .unwrap()
            .contains_key("/outbox/responses.zip.part")
    );

    let written = client
        .write_stream(
            "/outbox/responses.zip",
            Box::pin(std::io::Cursor::new(b"this week's export".to_vec())),
        )
        .await
        .unwrap();
    assert_eq!(written, 18);
    let files = files.lock().unwrap();
    assert_eq!(files["/outbox/responses.zip"], b"this week's export");
    assert!(
        !files.contains_key("/outbox/responses.zip.part"),
        "{:?}",
        files.keys()
    );
}

#[tokio::test]
async fn an_unexpected_host_key_or_password_is_refused() {
    let (config, _) = start(&[("/outbox/a.csv", "x")]).await;
    let impostor = SftpConfig {
        host_key_sha256: "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        ..config.clone()
    };
    assert!(
        SftpClient::new(impostor, r#"{"password":"pw"}"#)
            .unwrap()
            .list("/outbox")
            .await
            .is_err()
    );
    let wrong = SftpClient::new(config, r#"{"password":"nope"}"#).unwrap();
    assert!(
        !wrong.list("/outbox").await.unwrap_err().is_retryable(),
        "a refused login is not worth retrying"
    );
}

#[derive(Debug, Default)]
struct Defaults;
impl Hooks for Defaults {}

#[tokio::test]
async fn the_poller_copies_new_files_to_landing_once() {
    let (sftp, _) = start(&[("/outbox/a.csv", "id\n1\n")]).await;
    let config = Config::from_toml(
        "test",
        // The test server's files were written just now; this test is about the stream.
        "[pipeline]\nname='acme'\ndata_bucket='data'\n[steps.poll]\nremote_dir='/outbox'\nsettle_seconds=0\n",
    )
    .unwrap();
    let objects = Arc::new(MemoryObjectStore::default());
    let qualtrics: Arc<dyn QualtricsApi> = Arc::new(Unconfigured("q"));
    let client: Arc<dyn Sftp> = Arc::new(SftpClient::new(sftp, r#"{"password":"pw"}"#).unwrap());
    let services = Services {
        qualtrics,
        objects: objects.clone(),
        queue: Arc::new(MemoryQueue::default()),
        notifications: Arc::new(MemoryNotifications::default()),
        sftp: client,
    };
    let runner = Runner::<SftpPoller<Defaults>>::new("poll", config, services).unwrap();
    let tick = |n: u32| sqs_message(&format!("tick-{n}"), "{}");
    assert!(
        runner
            .handle_event(tick(1))
            .await
            .batch_item_failures
            .is_empty()
    );
    let landed = objects.keys("data", "landing/2024-05-01/");
    assert_eq!(landed.len(), 1, "{landed:?}");
    assert!(landed[0].ends_with("/a.csv"), "{landed:?}");
    assert_eq!(objects.text("data", &landed[0]).as_deref(), Some("id\n1\n"));
    objects.insert("data", &landed[0], "validated already");
    assert!(
        runner
            .handle_event(tick(2))
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(
        objects.text("data", &landed[0]).as_deref(),
        Some("validated already")
    );
    assert_eq!(objects.keys("data", "landing/"), landed, "copied once");
}
