//! Authentication, roles and TLS, through the real server on a real socket: API keys made and
//! revoked with the `checkpointd keys` command, the role every RPC needs, mutual TLS,
//! certificate reload, the per-tenant rate limit, and the refusal to run without
//! authentication beyond loopback. Certificates come from a test CA made here (rcgen).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ckpt_client::{Client, Error, EventKind, NewCheckpoint, ReadFilter, State, Target};
use ckpt_server::auth::{Role, required_role};
use ckpt_server::config::AuthMode;
use ckpt_server::{Config, RunningServer};
use common::Setup;
use futures::StreamExt;
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

// ---------------------------------------------------------------------------------------------
// A test CA
// ---------------------------------------------------------------------------------------------

/// A certificate authority made for one test.
struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    fn server(&self) -> Leaf {
        self.leaf(
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self) -> Leaf {
        self.leaf(&["agent-host"], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Writes `leaf` as `cert.pem` and `key.pem` in `dir`, replacing them the way deployment
/// tools do (a new file renamed over the old), and returns their paths.
fn write_leaf(dir: &Path, leaf: &Leaf) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    replace_file(&key, leaf.key.as_bytes());
    replace_file(&cert, leaf.cert.as_bytes());
    (cert, key)
}

fn replace_file(path: &Path, bytes: &[u8]) {
    let staged = path.with_extension("new");
    std::fs::write(&staged, bytes).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Servers and keys
// ---------------------------------------------------------------------------------------------

/// A server requiring keys, over TLS with a certificate of `ca`, on a fresh catalog.
struct Secured {
    server: Option<RunningServer>,
    database: String,
    ca: TestCa,
    dir: tempfile::TempDir,
}

impl Secured {
    async fn start(setup: Setup, tweak: impl FnOnce(&mut Config, &Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("checkpointd test ca");
        let (cert, key) = write_leaf(dir.path(), &ca.server());
        let database = common::fresh_catalog(setup, dir.path()).await;
        let store = dir.path().join("chunks").to_string_lossy().into_owned();
        let mut config = Config::for_test(SocketAddr::from(([127, 0, 0, 1], 0)), &database, &store);
        config.auth = AuthMode::Required;
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
        tweak(&mut config, dir.path());
        let server = ckpt_server::start(config).await.expect("server starts");
        Self {
            server: Some(server),
            database,
            ca,
            dir,
        }
    }

    fn url(&self) -> String {
        self.server.as_ref().unwrap().url()
    }

    /// Creates a key with the admin command, as an operator would.
    fn create_key(&self, tenant: &str, role: &str) -> String {
        let output = keys_command(
            &self.database,
            &["create", "--tenant", tenant, "--role", role],
        );
        let key = String::from_utf8(output).unwrap().trim().to_owned();
        assert!(key.starts_with("ckpt_"), "{key}");
        key
    }

    fn revoke_key(&self, key: &str) {
        let id = key.split('_').nth(1).unwrap();
        keys_command(&self.database, &["revoke", id]);
    }

    /// The Rust client with `key`, trusting the test CA.
    async fn client(&self, key: &str) -> Client {
        Client::builder(self.url())
            .api_key(key)
            .tls_ca_pem(self.ca.pem.clone())
            .connect()
            .await
            .expect("client connects")
    }

    /// A TLS channel trusting the test CA, for raw calls.
    async fn channel(&self) -> Channel {
        tls_channel(
            &self.url(),
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca.pem)),
        )
        .await
        .expect("tls channel")
    }
}

async fn tls_channel(url: &str, tls: ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(url.to_owned())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Runs `checkpointd keys ARGS` on `database` and returns its standard output.
fn keys_command(database: &str, args: &[&str]) -> Vec<u8> {
    let output = Command::new(env!("CARGO_BIN_EXE_checkpointd"))
        .arg("keys")
        .args(args)
        .args(["--database", database])
        .env("CKPT_LOG", "warn")
        .output()
        .expect("checkpointd keys runs");
    assert!(
        output.status.success(),
        "checkpointd keys {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

// ---------------------------------------------------------------------------------------------
// Raw calls to any method
// ---------------------------------------------------------------------------------------------

/// Every method of `ckpt.v1.CheckpointService`, from the API's own descriptor.
fn api_methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(ckpt_proto::FILE_DESCRIPTOR_SET).unwrap();
    set.file
        .iter()
        .flat_map(|file| &file.service)
        .filter(|service| service.name() == "CheckpointService")
        .flat_map(|service| &service.method)
        .map(|method| method.name().to_owned())
        .collect()
}

/// Calls `method` with an empty request (every field at its default: a valid message for any
/// method) and `key`, and returns the status code the call ended with, or OK for a call still
/// open after a few seconds.
async fn call_code(channel: &Channel, method: &str, key: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("channel ready");
    let mut request = tonic::Request::new(());
    if let Some(key) = key {
        let value = format!("Bearer {key}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    let path = format!("/ckpt.v1.CheckpointService/{method}")
        .parse()
        .unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    // A refusal comes at once; a `Watch` that was let in stays open after its first event.
    match tokio::time::timeout(Duration::from_secs(3), grpc.unary(request, path, codec)).await {
        Ok(Ok(_)) | Err(_) => Code::Ok,
        Ok(Err(status)) => status.code(),
    }
}

fn is_auth_refusal(code: Code) -> bool {
    matches!(code, Code::Unauthenticated | Code::PermissionDenied)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

async fn every_rpc_admits_the_roles_it_needs_and_denies_the_rest(setup: Setup) {
    let env = Secured::start(setup, |_, _| {}).await;
    let keys = [
        (Role::Read, env.create_key("acme", "read")),
        (Role::Write, env.create_key("acme", "write")),
        (Role::Admin, env.create_key("acme", "admin")),
    ];
    let channel = env.channel().await;

    let methods = api_methods();
    assert!(methods.len() >= 31, "{methods:?}");
    for method in &methods {
        let needed = required_role(&format!("/ckpt.v1.CheckpointService/{method}"));
        for (role, key) in &keys {
            let code = call_code(&channel, method, Some(key)).await;
            if *role >= needed {
                assert!(!is_auth_refusal(code), "{role:?} key on {method}: {code:?}");
            } else {
                assert_eq!(code, Code::PermissionDenied, "{role:?} key on {method}");
            }
        }
        let code = call_code(&channel, method, None).await;
        assert_eq!(code, Code::Unauthenticated, "no key on {method}");
    }

    // The matrix's headlines, spelled out: read keys cannot write, write keys cannot administer.
    let (read, write, admin) = (&keys[0].1, &keys[1].1, &keys[2].1);
    for (key, method, expected) in [
        (read, "CreateCheckpoint", Code::PermissionDenied),
        (read, "UploadCheckpoint", Code::PermissionDenied),
        (read, "DeleteSession", Code::PermissionDenied),
        (read, "Merge", Code::PermissionDenied),
        (write, "Collect", Code::PermissionDenied),
        (write, "Verify", Code::PermissionDenied),
        (write, "SetRetentionPolicy", Code::PermissionDenied),
    ] {
        assert_eq!(
            call_code(&channel, method, Some(key)).await,
            expected,
            "{method}"
        );
    }
    assert!(!is_auth_refusal(
        call_code(&channel, "Collect", Some(admin)).await
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_role_matrix_holds_on_postgres() {
    every_rpc_admits_the_roles_it_needs_and_denies_the_rest(Setup::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_role_matrix_holds_on_sqlite() {
    every_rpc_admits_the_roles_it_needs_and_denies_the_rest(Setup::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rust_client_writes_with_a_write_key_and_only_reads_with_a_read_key() {
    let env = Secured::start(Setup::Postgres, |_, _| {}).await;
    let writer = env.client(&env.create_key("acme", "write")).await;
    let reader = env.client(&env.create_key("acme", "read")).await;

    let mut state = State::new();
    state.insert("notes.md".into(), "hello".into());
    let created = writer
        .create(NewCheckpoint::full("s1", state.clone()))
        .await
        .expect("a write key writes");
    let (_, loaded) = reader
        .read_state(Target::checkpoint(&created.id), ReadFilter::default())
        .await
        .expect("a read key reads");
    assert_eq!(loaded, state);

    let refused = reader
        .create(NewCheckpoint::full("s2", state))
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::PermissionDenied(_)), "{refused:?}");
    assert!(refused.to_string().contains("needs write"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_a_read_key_watches_and_only_a_write_key_leases() {
    let env = Secured::start(Setup::Postgres, |_, _| {}).await;
    let writer = env.client(&env.create_key("acme", "write")).await;
    let reader = env.client(&env.create_key("acme", "read")).await;

    let mut events = Box::pin(
        reader
            .watch("s1", "", "")
            .await
            .expect("a read key watches"),
    );
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first.kind, EventKind::Heartbeat);

    let lease = writer
        .acquire_lease("s1", "main", "host-1", Duration::from_secs(30))
        .await
        .expect("a write key leases");
    let refused = reader
        .acquire_lease("s1", "main", "host-2", Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::PermissionDenied(_)), "{refused:?}");

    let created = writer
        .create(NewCheckpoint::full("s1", State::new()).lease(lease.token))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.next().await.unwrap().unwrap();
            if event.kind != EventKind::Heartbeat {
                return event;
            }
        }
    })
    .await
    .expect("the create reaches the watcher");
    assert_eq!(event.kind, EventKind::CheckpointCreated);
    assert_eq!(event.new_checkpoint_id, created.id);

    // The watch is refused without a key, like any other call.
    let anonymous = Client::builder(env.url())
        .tls_ca_pem(env.ca.pem.clone())
        .connect()
        .await
        .unwrap();
    let refused = anonymous.watch("s1", "", "").await.err().unwrap();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

async fn missing_garbled_unknown_and_revoked_keys_are_refused(setup: Setup) {
    let env = Secured::start(setup, |_, _| {}).await;
    let key = env.create_key("acme", "read");
    let channel = env.channel().await;
    assert_eq!(
        call_code(&channel, "ListSessions", Some(&key)).await,
        Code::Ok
    );

    let id = key.split('_').nth(1).unwrap();
    let wrong_secret = format!("ckpt_{id}_{}", "0".repeat(64));
    let unknown = format!("ckpt_{}_{}", "f".repeat(16), "0".repeat(64));
    for bad in [
        None,
        Some("hello"),
        Some(&wrong_secret[..]),
        Some(&unknown[..]),
    ] {
        let code = call_code(&channel, "ListSessions", bad).await;
        assert_eq!(code, Code::Unauthenticated, "{bad:?}");
    }

    // Health checks need no key.
    let mut health = HealthClient::new(channel.clone());
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers without a key");

    // Revoked by another process; the very next call is refused, on the open connection too.
    env.revoke_key(&key);
    assert_eq!(
        call_code(&channel, "ListSessions", Some(&key)).await,
        Code::Unauthenticated
    );
    let listed = String::from_utf8(keys_command(&env.database, &["list"])).unwrap();
    let line = listed.lines().find(|l| l.starts_with(id)).expect("listed");
    assert!(line.contains("acme") && line.contains("read"), "{line}");
    assert!(!line.contains(" - "), "revocation time shown: {line}");
    assert!(
        !listed.contains(key.rsplit('_').next().unwrap()),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_keys_are_refused_on_postgres() {
    missing_garbled_unknown_and_revoked_keys_are_refused(Setup::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_keys_are_refused_on_sqlite() {
    missing_garbled_unknown_and_revoked_keys_are_refused(Setup::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_text_to_the_tls_port_fails_and_tls_is_served() {
    let env = Secured::start(Setup::Sqlite, |_, _| {}).await;
    let key = env.create_key("acme", "read");
    assert!(env.url().starts_with("https://"), "{}", env.url());

    let plain_url = env.url().replacen("https://", "http://", 1);
    let plain = async {
        let client = Client::builder(plain_url).api_key(&key).connect().await?;
        client.list_sessions(0, "").await
    };
    let outcome = tokio::time::timeout(Duration::from_secs(20), plain)
        .await
        .expect("a plain-text attempt ends rather than hangs");
    assert!(outcome.is_err(), "plain text was served: {outcome:?}");

    // Not trusting the server's CA fails too; trusting it works.
    let untrusting =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(TestCa::new("other").pem));
    assert!(tls_channel(&env.url(), untrusting).await.is_err());
    env.client(&key)
        .await
        .list_sessions(0, "")
        .await
        .expect("served over tls");
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    let clients_ca = TestCa::new("client ca");
    let ca_pem = clients_ca.pem.clone();
    let env = Secured::start(Setup::Postgres, |config, dir| {
        let path = dir.join("clients-ca.pem");
        std::fs::write(&path, &ca_pem).unwrap();
        config.tls_client_ca = Some(path);
    })
    .await;
    let key = env.create_key("acme", "read");
    let trust = || ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&env.ca.pem));

    // No certificate: the handshake (or the first call on it) fails.
    let bare = tls_channel(&env.url(), trust()).await;
    if let Ok(channel) = bare {
        assert_ne!(
            call_code(&channel, "ListSessions", Some(&key)).await,
            Code::Ok
        );
    }
    // A certificate from another CA: refused the same way.
    let stranger = TestCa::new("stranger").client();
    let other = tls_channel(
        &env.url(),
        trust().identity(Identity::from_pem(&stranger.cert, &stranger.key)),
    )
    .await;
    if let Ok(channel) = other {
        assert_ne!(
            call_code(&channel, "ListSessions", Some(&key)).await,
            Code::Ok
        );
    }

    // The CA's own client certificate, through the Rust client.
    let ours = clients_ca.client();
    let client = Client::builder(env.url())
        .api_key(&key)
        .tls_ca_pem(env.ca.pem.clone())
        .tls_identity_pem(ours.cert.clone(), ours.key.clone())
        .connect()
        .await
        .expect("a client with the right certificate connects");
    client.list_sessions(0, "").await.expect("and is served");
}

#[tokio::test(flavor = "multi_thread")]
async fn replaced_certificate_files_reach_new_connections_without_a_restart() {
    let env = Secured::start(Setup::Postgres, |config, _| {
        config.tls_reload_interval = Duration::from_millis(100);
    })
    .await;
    let key = env.create_key("acme", "read");
    let trusting = |ca: &str| ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    let old_ca = env.ca.pem.clone();

    // A broken file is logged and the old certificate kept.
    replace_file(&env.dir.path().join("cert.pem"), b"not a certificate");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let channel = tls_channel(&env.url(), trusting(&old_ca))
        .await
        .expect("old cert still served");
    assert_eq!(
        call_code(&channel, "ListSessions", Some(&key)).await,
        Code::Ok
    );

    // A certificate from a new CA is served to new connections once the files change.
    let new_ca = TestCa::new("next ca");
    write_leaf(env.dir.path(), &new_ca.server());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(channel) = tls_channel(&env.url(), trusting(&new_ca.pem)).await {
            assert_eq!(
                call_code(&channel, "ListSessions", Some(&key)).await,
                Code::Ok
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        tls_channel(&env.url(), trusting(&old_ca)).await.is_err(),
        "new connections must no longer get the old certificate"
    );
    // The connection made before the reload keeps working.
    assert_eq!(
        call_code(&channel, "ListSessions", Some(&key)).await,
        Code::Ok
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_certificate_when_the_timer_is_off() {
    let env = Secured::start(Setup::Sqlite, |config, _| {
        config.tls_reload_interval = Duration::ZERO;
    })
    .await;
    let key = env.create_key("acme", "read");
    let trusting = |ca: &str| ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));

    let new_ca = TestCa::new("next ca");
    write_leaf(env.dir.path(), &new_ca.server());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tls_channel(&env.url(), trusting(&env.ca.pem)).await.is_ok(),
        "with no timer the old certificate stays until SIGHUP"
    );

    // The server runs in this process: signal ourselves.
    let status = Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(channel) = tls_channel(&env.url(), trusting(&new_ca.pem)).await {
            assert_eq!(
                call_code(&channel, "ListSessions", Some(&key)).await,
                Code::Ok
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_over_its_rate_is_refused_with_resource_exhausted() {
    let env = Secured::start(Setup::Postgres, |config, _| {
        config.rate_limit = 1;
        config.rate_limit_burst = Some(3);
    })
    .await;
    let busy = env.create_key("busy", "read");
    let quiet = env.create_key("quiet", "read");
    let channel = env.channel().await;

    for _ in 0..3 {
        assert_eq!(
            call_code(&channel, "ListSessions", Some(&busy)).await,
            Code::Ok
        );
    }
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {busy}").parse().unwrap());
    let path = "/ckpt.v1.CheckpointService/ListSessions".parse().unwrap();
    let status = grpc
        .unary(request, path, tonic_prost::ProstCodec::<(), ()>::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status
            .message()
            .contains("rate limit of 1 calls/s (burst 3)"),
        "{}",
        status.message()
    );
    // Another tenant has a bucket of its own.
    assert_eq!(
        call_code(&channel, "ListSessions", Some(&quiet)).await,
        Code::Ok
    );
}

#[test]
fn the_keys_command_refuses_unknown_keys_empty_tenants_and_unknown_roles() {
    let dir = tempfile::tempdir().unwrap();
    let keys = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_checkpointd"))
            .arg("keys")
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env("CKPT_LOG", "warn")
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("checkpointd keys runs")
    };
    for (args, expected) in [
        (
            &["revoke", "0123456789abcdef"][..],
            "api key 0123456789abcdef not found",
        ),
        (
            &["create", "--tenant", " ", "--role", "read"],
            "--tenant must not be empty",
        ),
        (
            &["create", "--tenant", "acme", "--role", "owner"],
            "unknown role \"owner\"",
        ),
    ] {
        let output = keys(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?} printed a key");
    }
}

#[test]
fn auth_off_beyond_loopback_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_checkpointd"))
        .args(["--listen", "0.0.0.0:0", "--auth", "off"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("CKPT_LOG", "warn")
        .output()
        .expect("checkpointd runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 with --auth off"),
        "{stderr}"
    );
    assert!(stderr.contains("--auth required"), "{stderr}");
}

#[test]
fn auth_off_beyond_loopback_starts_when_explicitly_allowed() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_checkpointd"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--allow-unauthenticated",
            "--log-format",
            "json",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("CKPT_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("checkpointd starts");
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut warned = false;
    let mut listening = false;
    for line in lines {
        let line = line.unwrap();
        warned |= line.contains(r#""level":"WARN""#) && line.contains("beyond loopback");
        if line.contains("checkpointd listening") {
            listening = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "the server did not start");
    assert!(
        warned,
        "no warning about serving beyond loopback without authentication"
    );
}

#[test]
fn auth_off_on_loopback_says_so_at_start() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_checkpointd"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("CKPT_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("checkpointd starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut before = Vec::new();
    let mut listening = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("checkpointd listening") {
            listening = Some(line);
            break;
        }
        before.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    let listening = listening.expect("the server started");
    let warned = before
        .iter()
        .any(|line| line.contains(r#""level":"WARN""#) && line.contains("authentication is off"));
    assert!(warned, "no warning before {listening}: {before:#?}");
    assert!(listening.contains(r#""auth":"off""#), "{listening}");
}
