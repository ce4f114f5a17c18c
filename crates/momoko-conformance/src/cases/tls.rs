//! TLS and password authentication: every `sslmode` against a server that only accepts TLS,
//! certificate verification (CA, host name, channel binding), cancel over TLS, SCRAM-SHA-256 and
//! md5 passwords, and passwords that never show in `Debug`, `Display` or log lines.
//!
//! The TLS cases share one private cluster (per test process) whose certificates are made here
//! with rcgen: a P-384 CA (so the server certificate is signed with ecdsa-with-SHA384 and
//! `tls-server-end-point` must use SHA-384), a server certificate for `localhost` and
//! `127.0.0.1`, and an unrelated second CA. Its `pg_hba.conf` accepts only `hostssl` sessions
//! (SCRAM) and rejects plain ones, so a session that works proves TLS was used; each case also
//! asks `pg_stat_ssl`.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::channel::oneshot;
use momoko_core::{ConnectOptions, Connection, Error, Pool, SqlState, SslMode};
use momoko_testkit::{Cluster, ClusterOptions};

use crate::support::{off_thread, scalar};
use crate::Ctx;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The password of the TLS cluster's `app` role: spaces, quotes, a backslash, `$`, `&`, `=`,
/// `?`, `%` and non-ASCII, so that quoting and redaction are both exercised.
const APP_PASSWORD: &str = r#"tls pa$$ 'wörd' "x" \ &=?%41"#;

/// Quotes a value for a key/value connection string.
fn kv(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Quotes a string literal for SQL (standard_conforming_strings is on).
fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Percent-encodes everything but unreserved characters, for URLs.
fn url_encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether the session of `conn` runs over TLS, per the server.
async fn session_uses_tls(conn: &Connection) -> bool {
    scalar(
        conn,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
}

/// Asserts that neither the `Display` nor the `Debug` form of `what` contains `secret` (or a
/// recognisable piece of it).
fn assert_not_shown(what: &(impl std::fmt::Display + Debug), secret: &str) {
    let pieces: Vec<&str> = secret
        .split(|c: char| c.is_whitespace() || c == '\\')
        .filter(|p| p.chars().count() >= 4)
        .collect();
    for text in [what.to_string(), format!("{what:?}")] {
        assert!(!text.contains(secret), "the password leaked: {text}");
        for piece in &pieces {
            assert!(
                !text.contains(piece),
                "part of the password ({piece:?}) leaked: {text}"
            );
        }
    }
}

/// `Debug` only (for types without `Display`).
fn assert_not_in_debug(what: &impl Debug, secret: &str) {
    let text = format!("{what:?}");
    assert!(!text.contains(secret), "the password leaked: {text}");
}

// ---------------------------------------------------------------------------------------------
// Certificates and the shared TLS cluster
// ---------------------------------------------------------------------------------------------

/// PEM texts made by rcgen.
struct Pki {
    ca: String,
    other_ca: String,
    server_cert: String,
    server_key: String,
}

fn make_ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("a P-384 CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    rcgen::CertifiedIssuer::self_signed(params, key).expect("a self-signed CA")
}

fn make_pki() -> Pki {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let ca = make_ca("momoko test CA");
    let other = make_ca("momoko unrelated CA");
    let server_key = KeyPair::generate().expect("a server key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server certificate parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params
        .signed_by(&server_key, &ca)
        .expect("sign the server certificate");
    Pki {
        ca: ca.pem(),
        other_ca: other.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
    }
}

/// Writes `contents` to `path` with `mode`, owned like `owner_of` (the server's user).
fn write_owned(path: &Path, contents: &str, mode: u32, owner_of: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::write(path, contents)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    let meta = std::fs::metadata(owner_of)?;
    if std::fs::metadata(path)?.uid() != meta.uid() {
        std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(())
}

/// The shared cluster that only accepts TLS sessions.
#[derive(Debug)]
struct TlsCluster {
    cluster: Cluster,
    /// The CA that signed the server certificate.
    ca: PathBuf,
    /// A CA that signed nothing the server has.
    other_ca: PathBuf,
}

impl TlsCluster {
    fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// A key/value DSN for `app` on `host` (plus `extra` settings).
    fn dsn(&self, host: &str, password: &str, extra: &str) -> String {
        format!(
            "host={host} port={} user=app dbname=postgres password={} {extra}",
            self.port(),
            kv(password)
        )
    }

    fn ca(&self) -> String {
        kv(self.ca.to_str().expect("a UTF-8 path"))
    }

    fn other_ca(&self) -> String {
        kv(self.other_ca.to_str().expect("a UTF-8 path"))
    }
}

fn start_tls_cluster() -> std::io::Result<TlsCluster> {
    let cluster = Cluster::start_new(ClusterOptions::default())?;
    let data = cluster
        .data_dir()
        .ok_or_else(|| std::io::Error::other("the TLS cluster has no data directory"))?
        .to_owned();
    let pki = make_pki();
    write_owned(&data.join("server.crt"), &pki.server_cert, 0o644, &data)?;
    write_owned(&data.join("server.key"), &pki.server_key, 0o600, &data)?;
    let ca = data.join("momoko-ca.pem");
    let other_ca = data.join("momoko-other-ca.pem");
    write_owned(&ca, &pki.ca, 0o644, &data)?;
    write_owned(&other_ca, &pki.other_ca, 0o644, &data)?;

    // TLS on first (hostssl lines are only valid once it is), then the TLS-only rules.
    cluster.reload_with(
        &[
            "ssl = on",
            "ssl_cert_file = 'server.crt'",
            "ssl_key_file = 'server.key'",
            "password_encryption = 'scram-sha-256'",
        ],
        None,
    )?;
    cluster.reload_with(
        &[],
        Some(
            "local   all all                  trust\n\
             hostssl all all 127.0.0.1/32     scram-sha-256\n\
             hostssl all all ::1/128          scram-sha-256\n\
             host    all all 127.0.0.1/32     reject\n\
             host    all all ::1/128          reject\n",
        ),
    )?;
    cluster.psql(
        "postgres",
        &format!(
            "CREATE ROLE app LOGIN PASSWORD {}",
            sql_literal(APP_PASSWORD)
        ),
    )?;
    Ok(TlsCluster {
        cluster,
        ca,
        other_ca,
    })
}

static TLS_CLUSTER: OnceLock<Result<TlsCluster, String>> = OnceLock::new();

/// The shared TLS cluster, started on first use off the executor (its start blocks). Each case
/// may run on another runtime instance; the cluster holds no runtime state.
async fn tls_cluster() -> &'static TlsCluster {
    let cluster = off_thread(|| {
        TLS_CLUSTER
            .get_or_init(|| start_tls_cluster().map_err(|e| e.to_string()))
            .as_ref()
    })
    .await;
    match cluster {
        Ok(c) => c,
        Err(e) => panic!("cannot start the TLS test cluster: {e}"),
    }
}

async fn connect(ctx: &Ctx, dsn: &str) -> momoko_core::Result<Connection> {
    Connection::connect(dsn, ctx.executor.clone()).await
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// `sslmode=require` (no root certificate: encryption without verification) and the default
/// `prefer` both run over TLS; a statement can be cancelled over TLS.
pub async fn tls_require_succeeds(ctx: &Ctx) {
    let tls = tls_cluster().await;

    let options = ConnectOptions::parse(&tls.dsn("127.0.0.1", APP_PASSWORD, "sslmode=require"))
        .expect("parse");
    assert_eq!(options.get_ssl_mode(), SslMode::Require);
    let conn = Connection::connect_with(&options, ctx.executor.clone())
        .await
        .expect("sslmode=require connects");
    assert!(session_uses_tls(&conn).await, "pg_stat_ssl says ssl=true");
    let version: String = scalar(
        &conn,
        "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await;
    assert!(version.starts_with("TLSv1."), "{version}");
    let user: String = scalar(&conn, "SELECT current_user::text", &[]).await;
    assert_eq!(user, "app");

    // Cancel goes over a new stream with the same TLS mode.
    let conn = Arc::new(conn);
    let (tx, rx) = oneshot::channel();
    let running = Arc::clone(&conn);
    ctx.executor.spawn(Box::pin(async move {
        let result = running.execute("SELECT pg_sleep(30)", &[]).await;
        let _ = tx.send(result.map(|c| c.rowcount()));
    }));
    let watcher = connect(ctx, &tls.dsn("127.0.0.1", APP_PASSWORD, "sslmode=require"))
        .await
        .expect("a second TLS session");
    let mut active = false;
    for _ in 0..1000 {
        let n: i64 = scalar(
            &watcher,
            "SELECT count(*) FROM pg_stat_activity \
             WHERE usename = 'app' AND state = 'active' AND query LIKE 'SELECT pg_sleep(30)%'",
            &[],
        )
        .await;
        if n == 1 {
            active = true;
            break;
        }
        ctx.sleep(Duration::from_millis(10)).await;
    }
    assert!(active, "the server shows the sleep running");
    conn.cancel()
        .await
        .expect("send the cancel request over TLS");
    let err = rx
        .await
        .expect("the query task finished")
        .expect_err("the query was canceled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
    assert!(session_uses_tls(&conn).await);

    // prefer (the default) takes TLS when the server offers it.
    let conn = connect(ctx, &tls.dsn("127.0.0.1", APP_PASSWORD, ""))
        .await
        .expect("the default sslmode=prefer connects");
    assert!(session_uses_tls(&conn).await, "prefer used TLS");

    // The kit's shared cluster has no TLS: require fails clearly, prefer connects in plain.
    if ctx.db.cluster().is_owned() {
        let err = connect(ctx, &format!("{} sslmode=require", ctx.dsn()))
            .await
            .expect_err("require against a server without TLS");
        assert!(err.is_connect(), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("does not support TLS") && text.contains("sslmode=require"),
            "{text}"
        );
        let conn = connect(ctx, &format!("{} sslmode=prefer", ctx.dsn()))
            .await
            .expect("prefer connects in plain");
        assert!(!session_uses_tls(&conn).await);
    }
}

/// `verify-full` against the right CA, by name (`localhost`) and by IP address (the certificate
/// names both), in key/value and URL form, with `channel_binding=require` (so SCRAM-SHA-256-PLUS
/// with a SHA-384 `tls-server-end-point` is proven), and through a pool.
pub async fn tls_verify_full_succeeds(ctx: &Ctx) {
    let tls = tls_cluster().await;
    for host in ["localhost", "127.0.0.1"] {
        let dsn = tls.dsn(
            host,
            APP_PASSWORD,
            &format!(
                "sslmode=verify-full sslrootcert={} channel_binding=require",
                tls.ca()
            ),
        );
        let conn = connect(ctx, &dsn)
            .await
            .unwrap_or_else(|e| panic!("verify-full to {host}: {e}"));
        assert!(session_uses_tls(&conn).await, "{host}: ssl=true");
    }

    let url = format!(
        "postgresql://app:{}@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}&application_name=tls_url",
        url_encode(APP_PASSWORD),
        tls.port(),
        url_encode(tls.ca.to_str().expect("a UTF-8 path")),
    );
    let options = ConnectOptions::parse(&url).expect("the URL parses");
    assert_eq!(options.get_ssl_mode(), SslMode::VerifyFull);
    assert_not_in_debug(&options, APP_PASSWORD);
    let conn = Connection::connect_with(&options, ctx.executor.clone())
        .await
        .expect("verify-full from a URL");
    assert!(session_uses_tls(&conn).await);
    let app: String = scalar(&conn, "SELECT current_setting('application_name')", &[]).await;
    assert_eq!(app, "tls_url", "the other URL parameters still apply");

    // A pool over TLS: every connection verified and encrypted.
    let dsn = tls.dsn(
        "localhost",
        APP_PASSWORD,
        &format!("sslmode=verify-full sslrootcert={}", tls.ca()),
    );
    let pool = Pool::builder(&dsn, ctx.executor.clone())
        .size(2)
        .connect()
        .await
        .expect("a TLS pool");
    let sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let (a, b) = futures::try_join!(pool.execute(sql, &[]), pool.execute(sql, &[]))
        .expect("queries through the pool");
    assert_eq!(a.scalar::<bool>().ok(), Some(true));
    assert_eq!(b.scalar::<bool>().ok(), Some(true));
    pool.close().await;
}

/// A CA that did not sign the server's certificate: `verify-ca`, `verify-full` and `require`
/// with that `sslrootcert` (libpq then verifies too) all fail with a clear connect error.
pub async fn tls_wrong_ca_fails(ctx: &Ctx) {
    let tls = tls_cluster().await;
    for mode in ["verify-ca", "verify-full", "require"] {
        let dsn = tls.dsn(
            "localhost",
            APP_PASSWORD,
            &format!("sslmode={mode} sslrootcert={}", tls.other_ca()),
        );
        let err = connect(ctx, &dsn)
            .await
            .expect_err("an unknown CA is refused");
        assert!(err.is_connect(), "{mode}: {err:?}");
        let text = err.to_string();
        for needle in ["TLS", "certificate", "trusted CA", "momoko-other-ca.pem"] {
            assert!(
                text.contains(needle),
                "{mode}: {needle:?} missing in: {text}"
            );
        }
        assert!(
            err.code().is_none(),
            "the server never saw a startup: {err:?}"
        );
        assert_not_shown(&err, APP_PASSWORD);
    }
}

/// `verify-full` checks the certificate against `host`, never `hostaddr`: a name the certificate
/// lacks fails (with the name in the message) even though the address is right; `verify-ca`
/// does not check the name and connects.
pub async fn tls_wrong_host_fails(ctx: &Ctx) {
    let tls = tls_cluster().await;
    let dsn = |mode: &str| {
        tls.dsn(
            "db.invalid",
            APP_PASSWORD,
            &format!("hostaddr=127.0.0.1 sslmode={mode} sslrootcert={}", tls.ca()),
        )
    };
    let err = connect(ctx, &dsn("verify-full"))
        .await
        .expect_err("a certificate for another name is refused");
    assert!(err.is_connect(), "{err:?}");
    let text = err.to_string();
    for needle in ["TLS", "certificate", "db.invalid", "verify-full"] {
        assert!(text.contains(needle), "{needle:?} missing in: {text}");
    }
    assert_not_shown(&err, APP_PASSWORD);

    let conn = connect(ctx, &dsn("verify-ca"))
        .await
        .expect("verify-ca ignores the host name");
    assert!(session_uses_tls(&conn).await);
}

/// `sslmode=disable` against a server that only accepts TLS: the server's own refusal
/// (SQLSTATE 28000 from pg_hba.conf), as an auth error that says "no encryption".
pub async fn tls_disable_against_hostssl_only_fails_clearly(ctx: &Ctx) {
    let tls = tls_cluster().await;
    let err = connect(ctx, &tls.dsn("127.0.0.1", APP_PASSWORD, "sslmode=disable"))
        .await
        .expect_err("a plain session is rejected");
    assert!(err.is_auth(), "{err:?}");
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("pg_hba.conf"), "{text}");
    assert!(text.contains("no encryption"), "{text}");
    assert_not_shown(&err, APP_PASSWORD);
}

/// libpq's retries: `allow` starts in plain and, refused, retries with TLS; `prefer` whose TLS
/// handshake fails (here: an untrusted CA) retries in plain, which this server then refuses.
pub async fn tls_allow_and_prefer_fall_back(ctx: &Ctx) {
    let tls = tls_cluster().await;
    let conn = connect(ctx, &tls.dsn("127.0.0.1", APP_PASSWORD, "sslmode=allow"))
        .await
        .expect("allow upgrades to TLS when plain is refused");
    assert!(session_uses_tls(&conn).await);
    let err = connect(
        ctx,
        &tls.dsn("127.0.0.1", "not the password", "sslmode=allow"),
    )
    .await
    .expect_err("a wrong password fails over TLS too");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err:?}");
    assert!(
        err.to_string().contains("before that, without TLS"),
        "{err}"
    );

    let err = connect(
        ctx,
        &tls.dsn(
            "localhost",
            APP_PASSWORD,
            &format!("sslmode=prefer sslrootcert={}", tls.other_ca()),
        ),
    )
    .await
    .expect_err("prefer falls back to plain, which the server refuses");
    assert!(err.is_auth(), "the plain retry's refusal: {err:?}");
    let text = err.to_string();
    assert!(text.contains("no encryption"), "{text}");
    assert!(
        text.contains("before that, with TLS") && text.contains("trusted CA"),
        "the error tells what the TLS attempt ran into: {text}"
    );
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{err:?}"
    );
    assert_not_shown(&err, APP_PASSWORD);
}

/// SCRAM-SHA-256 and md5 password authentication (no TLS: the server offers none, so the
/// default `prefer` connects in plain): the right password works, a wrong one is `28P01`, and
/// no error shows either password.
pub async fn scram_and_md5_passwords(ctx: &Ctx) {
    const SCRAM_PW: &str = r#"scr@m pässwörd 'q' \ x"#;
    const MD5_PW: &str = r#"md5 p@ss "wörd" ; y"#;
    const WRONG: &str = "Wr0ng-pa55-plugh";

    let cluster: Cluster = off_thread(|| -> std::io::Result<Cluster> {
        let mut options = ClusterOptions::default();
        options.hba = Some(
            "local all all                      trust\n\
             host  all scram_user 127.0.0.1/32  scram-sha-256\n\
             host  all md5_user   127.0.0.1/32  md5\n"
                .to_owned(),
        );
        options.conf = vec!["password_encryption = 'scram-sha-256'".to_owned()];
        let cluster = Cluster::start_new(options)?;
        cluster.psql(
            "postgres",
            &format!(
                "CREATE ROLE scram_user LOGIN PASSWORD {};\n\
                 SET password_encryption = 'md5';\n\
                 CREATE ROLE md5_user LOGIN PASSWORD {};",
                sql_literal(SCRAM_PW),
                sql_literal(MD5_PW)
            ),
        )?;
        let stored = cluster.psql(
            "postgres",
            "SELECT rolname || '=' || split_part(rolpassword, '$', 1) FROM pg_authid \
             WHERE rolname IN ('scram_user', 'md5_user') ORDER BY rolname",
        )?;
        assert!(stored.contains("scram_user=SCRAM-SHA-256"), "{stored}");
        assert!(stored.contains("md5_user=md5"), "{stored}");
        Ok(cluster)
    })
    .await
    .expect("start a private cluster with SCRAM and md5 roles");

    let dsn = |user: &str, password: &str| {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=postgres password={}",
            cluster.port(),
            kv(password)
        )
    };
    for (user, right) in [("scram_user", SCRAM_PW), ("md5_user", MD5_PW)] {
        let conn = connect(ctx, &dsn(user, right))
            .await
            .unwrap_or_else(|e| panic!("{user} with the right password: {e}"));
        let who: String = scalar(&conn, "SELECT current_user::text", &[]).await;
        assert_eq!(who, user);
        assert!(!session_uses_tls(&conn).await, "no TLS on this server");
        drop(conn);

        for wrong in [WRONG, &right[..right.len() - 1]] {
            let err = connect(ctx, &dsn(user, wrong))
                .await
                .expect_err("a wrong password is refused");
            assert!(err.is_auth(), "{user}: {err:?}");
            assert_eq!(
                err.code(),
                Some(&SqlState::INVALID_PASSWORD),
                "{user}: {err:?}"
            );
            assert_not_shown(&err, wrong);
            assert_not_shown(&err, right);
        }
        // The password of the other role does not open this one.
        let other = if user == "scram_user" {
            MD5_PW
        } else {
            SCRAM_PW
        };
        let err = connect(ctx, &dsn(user, other)).await.expect_err("refused");
        assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err:?}");
    }

    off_thread(move || drop(cluster)).await;
}

// ----- Watching log lines ---------------------------------------------------------------------

/// Secrets no log line may contain, and the lines that did.
static WATCHED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static LEAKS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Whether the watching subscriber is the process' global one.
static WATCHING: OnceLock<bool> = OnceLock::new();

/// A `tracing` subscriber that formats every field of every event and span at every level and
/// records those containing a watched secret. Installed once, as the global default, so that it
/// sees events from every thread and runtime.
struct LeakWatch;

struct FieldText(String);

impl tracing::field::Visit for FieldText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!(" {}={value}", field.name()));
    }

    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.0
            .push_str(&format!(" {}={value} / {value:?}", field.name()));
    }
}

fn check_line(text: String) {
    let watched = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
    if watched.iter().any(|secret| text.contains(secret.as_str())) {
        LEAKS.lock().unwrap_or_else(|e| e.into_inner()).push(text);
    }
}

impl tracing::Subscriber for LeakWatch {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut text = FieldText(span.metadata().name().to_owned());
        span.record(&mut text);
        check_line(text.0);
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut text = FieldText(String::new());
        values.record(&mut text);
        check_line(text.0);
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = FieldText(event.metadata().target().to_owned());
        event.record(&mut text);
        check_line(text.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Starts watching log lines for `secrets`; `false` if another global subscriber was set first.
fn watch_logs(secrets: &[&str]) -> bool {
    WATCHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(secrets.iter().map(|s| s.to_string()));
    *WATCHING.get_or_init(|| tracing::subscriber::set_global_default(LeakWatch).is_ok())
}

/// The password never shows in `Debug`/`Display` of `ConnectOptions`, `Connection` or any
/// error (config errors, auth errors, TLS failures, every-host-failed summaries), nor in any
/// log line momoko writes meanwhile (connect retries, failed hosts), at any level.
pub async fn password_never_printed(ctx: &Ctx) {
    const SECRET: &str = r#"n3ver-Sh0wn 'pw' "x" \ é&=?"#;
    let tls = tls_cluster().await;
    let watching = watch_logs(&[SECRET, "n3ver-Sh0wn", APP_PASSWORD, "pa$$"]);

    // Options, in both forms and with TLS settings.
    let forms = [
        tls.dsn(
            "localhost",
            SECRET,
            &format!("sslmode=verify-full sslrootcert={}", tls.ca()),
        ),
        format!(
            "postgresql://app:{}@localhost:{}/postgres?sslmode=require&connect_timeout=5",
            url_encode(SECRET),
            tls.port()
        ),
    ];
    for dsn in &forms {
        let options = ConnectOptions::parse(dsn).expect("parse");
        assert_eq!(
            options.as_tokio_postgres().get_password(),
            Some(SECRET.as_bytes()),
            "the password arrived intact"
        );
        assert_not_in_debug(&options, SECRET);
        assert_not_in_debug(&options, "n3ver-Sh0wn");
        assert_not_in_debug(options.as_tokio_postgres(), "n3ver-Sh0wn");
    }

    // Config errors.
    for dsn in [
        format!("host=h port=nope password={}", kv(SECRET)),
        format!("host=h password={} sslmode=sometimes", kv(SECRET)),
        format!("host=h password={} n3ver-Sh0wn", kv(SECRET)),
        format!("host=h password='{}", SECRET.replace('\'', "")),
        format!(
            "host=h sslmode=verify-ca sslrootcert=/nonexistent password={}",
            kv(SECRET)
        ),
        format!("host=h sslpassword={} sslmode=require", kv(SECRET)),
    ] {
        if let Err(err) = ConnectOptions::parse(&dsn) {
            assert!(err.is_config(), "{err:?}");
            assert_not_shown(&err, SECRET);
            assert_not_shown(&err, "n3ver-Sh0wn");
        }
    }

    // Server refusals, TLS failures, fallbacks and multi-host summaries, with a wrong password.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("address").port()
    };
    let failing = [
        tls.dsn("127.0.0.1", SECRET, "sslmode=require"),
        tls.dsn("127.0.0.1", SECRET, "sslmode=disable"),
        tls.dsn("127.0.0.1", SECRET, "sslmode=allow"),
        tls.dsn(
            "localhost",
            SECRET,
            &format!("sslmode=prefer sslrootcert={}", tls.other_ca()),
        ),
        tls.dsn(
            "localhost",
            SECRET,
            &format!("sslmode=verify-full sslrootcert={}", tls.other_ca()),
        ),
        format!(
            "host=127.0.0.1,127.0.0.1 port={dead},{} user=app dbname=postgres password={} \
             sslmode=require",
            tls.port(),
            kv(SECRET)
        ),
    ];
    for dsn in &failing {
        let err = connect(ctx, dsn).await.expect_err("refused");
        assert_not_shown(&err, SECRET);
        assert_not_shown(&err, "n3ver-Sh0wn");
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            assert!(!s.to_string().contains("n3ver-Sh0wn"), "{s}");
            source = s.source();
        }
    }

    // A working connection's Debug.
    let conn = connect(
        ctx,
        &tls.dsn(
            "localhost",
            APP_PASSWORD,
            &format!("sslmode=verify-full sslrootcert={}", tls.ca()),
        ),
    )
    .await
    .expect("connect");
    assert_not_in_debug(&conn, APP_PASSWORD);
    assert_not_in_debug(&conn, "pa$$");
    let err: Error = conn
        .execute("SELECT 1/0", &[])
        .await
        .expect_err("division by zero");
    assert_not_shown(&err, APP_PASSWORD);
    drop(conn);

    if watching {
        let leaks = LEAKS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert!(leaks.is_empty(), "log lines showed a password: {leaks:#?}");
    } else {
        eprintln!("another tracing subscriber is installed: log lines were not checked");
    }
}
