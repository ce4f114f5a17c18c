//! Parsing connection strings and the environment like libpq.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::time::Duration;

use super::dsn::{split_dsn, tokenize_kv};

/// What tokio-postgres gets and the TLS keys.
fn split(dsn: &str) -> Result<(String, SslParams)> {
    split_dsn(dsn).map(|s| (s.rest, s.ssl))
}
use super::*;
use crate::error::Result;
use crate::tls::{SslMode, SslParams};

fn parse(dsn: &str, env: &[(&str, &str)]) -> Result<ConnectOptions> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ConnectOptions::parse_with_env(dsn, move |name| {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
}

#[test]
fn key_value_with_host_list() {
    let o = parse("host=a,b port=1,2 user=u dbname=d", &[]).unwrap();
    assert_eq!(o.targets(), ["host a port 1", "host b port 2"]);
    assert_eq!(o.get_user(), Some("u"));
    assert_eq!(o.get_dbname(), Some("d"));
}

#[test]
fn url_form_and_unix_dir() {
    let o = parse("postgresql://u:pw@h:6543/db?connect_timeout=2", &[]).unwrap();
    assert_eq!(o.targets(), ["host h port 6543"]);
    assert_eq!(o.get_connect_timeout(), Some(Duration::from_secs(2)));
    let o = parse("host=/run/pg port=5433 user=u", &[]).unwrap();
    assert_eq!(o.targets(), ["socket /run/pg/.s.PGSQL.5433"]);
}

#[test]
fn env_fills_missing_settings_only() {
    let env = [
        ("PGHOST", "envhost"),
        ("PGPORT", "7777"),
        ("PGUSER", "envuser"),
        ("PGDATABASE", "envdb"),
        ("PGPASSWORD", "envpw"),
        ("PGCONNECT_TIMEOUT", "4"),
    ];
    let o = parse("", &env).unwrap();
    assert_eq!(o.targets(), ["host envhost port 7777"]);
    assert_eq!(o.get_user(), Some("envuser"));
    assert_eq!(o.get_dbname(), Some("envdb"));
    assert_eq!(o.pg.get_password(), Some(&b"envpw"[..]));
    assert_eq!(o.get_connect_timeout(), Some(Duration::from_secs(4)));
    let o = parse("host=h user=u dbname=d", &env).unwrap();
    assert_eq!(o.targets(), ["host h port 7777"]);
    assert_eq!(o.get_user(), Some("u"));
}

#[test]
fn defaults_are_libpq_like() {
    let o = parse("user=u", &[]).unwrap();
    let t = o.targets();
    assert_eq!(
        t.last().map(String::as_str),
        Some("host localhost port 5432")
    );
    assert!(t[0].starts_with("socket /var/run/postgresql/.s.PGSQL.5432"));
}

#[test]
fn hostaddr_replaces_host_for_tcp() {
    let o = parse("host=name hostaddr=127.0.0.1 port=5 user=u", &[]).unwrap();
    assert_eq!(o.targets(), ["host 127.0.0.1 port 5"]);
}

#[test]
fn bad_strings_are_config_errors_without_password() {
    for dsn in [
        "host=a,b port=1,2,3 user=u password=hunter2",
        "port=notaport password=hunter2",
        "postgresql://u:hunter2@h:99999/db",
        "sslmode=sometimes password=hunter2",
        "host=a hostaddr=1.2.3.4,5.6.7.8 user=u password=hunter2",
        "host='unterminated password=hunter2",
    ] {
        let e = parse(dsn, &[]).unwrap_err();
        assert!(e.is_config(), "{dsn}: {e:?}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
    }
}

#[test]
fn debug_redacts_password() {
    let o = parse("user=u password=hunter2 host=h", &[]).unwrap();
    let d = format!("{o:?}");
    assert!(!d.contains("hunter2"), "{d}");
    assert!(d.contains("<redacted>"), "{d}");
}

// -----------------------------------------------------------------------------------------
// The DSN pre-parser and TLS settings
// -----------------------------------------------------------------------------------------

/// A self-signed CA certificate (P-256, valid until 2126) and its key, for parsing only.
#[cfg(feature = "tls")]
pub(crate) const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBiTCCAS+gAwIBAgIUA2awnUO3BXSMC844WEa07GMMU34wCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwObW9tb2tvIHRlc3QgQ0EwIBcNMjYxMTIzMjE1MjM5WhgPMjEy
NjEwMzAyMTUyMzlaMBkxFzAVBgNVBAMMDm1vbW9rbyB0ZXN0IENBMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEwHDEI2udrjF0I6kViDRz9bXi9P7Hzc7om8UwiruP
GjfPyYOA4wwOXnifPDPjhGwuCFN8epqsp1XurRgLML2XjaNTMFEwHQYDVR0OBBYE
FArpBipBCAWV+DQKgBzuv8ggSB/TMB8GA1UdIwQYMBaAFArpBipBCAWV+DQKgBzu
v8ggSB/TMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgd1jkc9CH
BS+1O/De6l0Wy5T7kjyVLatl5uARHnmyFysCIQD4dsqbZrZbJIuvwIj7OfrVW5SK
TEHXFpq4ydaK8YIQFw==
-----END CERTIFICATE-----
";
#[cfg(feature = "tls")]
pub(crate) const TEST_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg2VOtT7A0iWe6e+tY
kq4zW4W6UWLgE2ajrDmpbWxMrRqhRANCAATAcMQja52uMXQjqRWINHP1teL0/sfN
zuibxTCKu48aN8/Jg4DjDA5eeJ88M+OEbC4IU3x6mqynVe6tGAswvZeN
-----END PRIVATE KEY-----
";

/// A file in a fresh temporary directory, removed on drop.
#[cfg(feature = "tls")]
struct TempFile(std::path::PathBuf);

#[cfg(feature = "tls")]
impl TempFile {
    fn new(name: &str, contents: &str, mode: u32) -> TempFile {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "momoko-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

#[cfg(feature = "tls")]
impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn kv(s: &str) -> Vec<(String, String)> {
    tokenize_kv(s).unwrap()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn tokenizer_follows_libpq() {
    assert_eq!(
        kv("host=h  port = 5 \t dbname= d"),
        pairs(&[("host", "h"), ("port", "5"), ("dbname", "d")])
    );
    // libpq has no '' escape: the quote ends the value, and what follows is no keyword.
    assert!(tokenize_kv("password='it''s'").is_err());
    assert_eq!(
        kv(r"user='a b' x='' y='back\\slash \'q\''"),
        pairs(&[("user", "a b"), ("x", ""), ("y", r"back\slash 'q'")])
    );
    assert_eq!(
        kv(r"password=a\ b\\c\'d"),
        pairs(&[("password", r"a b\c'd")])
    );
    assert_eq!(kv("a='x'b=y"), pairs(&[("a", "x"), ("b", "y")]));
    assert_eq!(kv("   "), pairs(&[]));
    assert_eq!(kv("a="), pairs(&[("a", "")]));
    assert_eq!(kv("a=ü€ b='✓ ok'"), pairs(&[("a", "ü€"), ("b", "✓ ok")]));
    for bad in [
        "password='hunter2",
        "hunter2",
        "user=u hunter2",
        "=hunter2",
        "password='hunter2\\'",
    ] {
        let e = tokenize_kv(bad).unwrap_err();
        assert!(e.is_config(), "{bad}: {e:?}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}

#[test]
fn split_takes_tls_keys_and_passes_the_rest() {
    let (rest, ssl) = split(concat!(
        r"host=h sslmode=verify-full sslrootcert='/a b/ca.pem' password='p w\'d' ",
        "sslpassword=hunter2 sslsni=0 application_name=x",
    ))
    .unwrap();
    assert_eq!(
        rest, r"host='h' password='p w\'d' application_name='x'",
        "our keys are taken out, the rest written back quoted"
    );
    assert_eq!(ssl.sslmode.as_deref(), Some("verify-full"));
    assert_eq!(ssl.sslrootcert.as_deref(), Some("/a b/ca.pem"));
    assert_eq!(ssl.sslsni.as_deref(), Some("0"));
    assert!(
        !format!("{ssl:?}").contains("hunter2"),
        "sslpassword is not kept"
    );
    // The written-back string means the same to tokio-postgres.
    let pg: tokio_postgres::Config = rest.parse().unwrap();
    assert_eq!(pg.get_password(), Some(&b"p w'd"[..]));
    assert_eq!(pg.get_application_name(), Some("x"));
    // The last value wins, as in libpq.
    let (_, ssl) = split("sslmode=require sslmode=disable").unwrap();
    assert_eq!(ssl.sslmode.as_deref(), Some("disable"));
    // Unknown keys reach tokio-postgres, which names them (never their values).
    let e = parse("user=u frobnicate=hunter2", &[]).unwrap_err();
    assert!(e.is_config(), "{e:?}");
    assert!(e.to_string().contains("frobnicate"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    // Keys tokio-postgres knows pass through untouched.
    let o = parse("user=u channel_binding=require sslmode=disable", &[]).unwrap();
    assert_eq!(
        o.pg.get_channel_binding(),
        tokio_postgres::config::ChannelBinding::Require
    );
}

#[test]
fn url_query_is_edited() {
    let (rest, ssl) = split(
        "postgresql://u:p%3Fw@h:5/db?sslmode=require&connect_timeout=3&sslrootcert=%2Ftmp%2Fca%20x.pem",
    )
    .unwrap();
    assert_eq!(rest, "postgresql://u:p%3Fw@h:5/db?connect_timeout=3");
    assert_eq!(ssl.sslmode.as_deref(), Some("require"));
    assert_eq!(ssl.sslrootcert.as_deref(), Some("/tmp/ca x.pem"));

    let (rest, ssl) = split("postgres://h/db?sslmode=disable").unwrap();
    assert_eq!(rest, "postgres://h/db");
    assert_eq!(ssl.sslmode.as_deref(), Some("disable"));

    // A `?` in the password is not the query string.
    let (rest, ssl) = split("postgresql://u:pa?ss@h/db?application_name=a").unwrap();
    assert_eq!(rest, "postgresql://u:pa?ss@h/db?application_name=a");
    assert_eq!(ssl, SslParams::default());

    // Encoded keys are recognised.
    let (rest, ssl) = split("postgresql:///db?ssl%6Dode=disable&host=%2Ftmp").unwrap();
    assert_eq!(rest, "postgresql:///db?host=%2Ftmp");
    assert_eq!(ssl.sslmode.as_deref(), Some("disable"));

    let o = parse(
        "postgresql://u:hunter2@h:6543/db?sslmode=disable&connect_timeout=2",
        &[],
    )
    .unwrap();
    assert_eq!(o.get_ssl_mode(), SslMode::Disable);
    assert_eq!(o.get_connect_timeout(), Some(Duration::from_secs(2)));
    assert_eq!(o.pg.get_password(), Some(&b"hunter2"[..]));

    let e = parse("postgresql://u:hunter2@h/db?sslmode=%zz", &[]).unwrap_err();
    assert!(e.is_config() && !e.to_string().contains("hunter2"), "{e}");
    let e = parse("postgresql://u:hunter2@h/db?sslmode=sometimes", &[]).unwrap_err();
    assert!(e.is_config() && !e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn sslmode_from_string_env_and_default() {
    let o = parse("user=u", &[]).unwrap();
    assert_eq!(o.get_ssl_mode(), SslMode::Prefer);
    let o = parse("user=u", &[("PGSSLMODE", "disable")]).unwrap();
    assert_eq!(o.get_ssl_mode(), SslMode::Disable);
    assert_eq!(
        o.pg.get_ssl_mode(),
        tokio_postgres::config::SslMode::Disable
    );
    let o = parse("user=u sslmode=allow", &[("PGSSLMODE", "disable")]).unwrap();
    assert_eq!(o.get_ssl_mode(), SslMode::Allow, "the string wins over env");
    let e = parse("user=u", &[("PGSSLMODE", "bogus")]).unwrap_err();
    assert!(e.is_config(), "{e:?}");
    let e = parse("user=u password=hunter2 sslmode=hunter2", &[]).unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(format!("{o:?}").contains("sslmode: Allow"), "{o:?}");
}

#[cfg(not(feature = "tls"))]
#[test]
fn without_the_tls_feature_only_plain_modes_work() {
    for mode in ["require", "verify-ca", "verify-full"] {
        let e = parse(&format!("user=u password=hunter2 sslmode={mode}"), &[]).unwrap_err();
        assert!(e.is_config(), "{e:?}");
        assert!(e.to_string().contains("`tls` feature"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
    for mode in ["disable", "allow", "prefer"] {
        let o = parse(&format!("user=u sslmode={mode}"), &[]).unwrap();
        assert!(!o.tls.available());
    }
}

#[cfg(feature = "tls")]
#[test]
fn tls_settings_resolve_like_libpq() {
    let ca = TempFile::new("ca.pem", TEST_CA_PEM, 0o644);
    let no_home = [("HOME", "/nonexistent-momoko-home")];

    // require: no verification without a root certificate, chain verification with one.
    let o = parse("user=u sslmode=require", &no_home).unwrap();
    assert_eq!(o.tls.verify, crate::tls::Verify::Nothing);
    assert_eq!(
        o.pg.get_ssl_mode(),
        tokio_postgres::config::SslMode::Require
    );
    let o = parse(
        &format!("user=u sslmode=require sslrootcert='{}'", ca.path()),
        &no_home,
    )
    .unwrap();
    assert_eq!(o.tls.verify, crate::tls::Verify::Chain);
    let o = parse(
        "host=h user=u sslmode=verify-full",
        &[("PGSSLROOTCERT", ca.path())],
    )
    .unwrap();
    assert_eq!(o.tls.verify, crate::tls::Verify::Full);
    assert_eq!(o.get_ssl_mode(), SslMode::VerifyFull);
    assert!(format!("{o:?}").contains(ca.path()), "{o:?}");

    // verify-* need roots; ~/.postgresql/root.crt is the fallback.
    let e = parse("user=u sslmode=verify-ca password=hunter2", &no_home).unwrap_err();
    assert!(
        e.is_config() && e.to_string().contains("sslrootcert"),
        "{e}"
    );
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let home = TempFile::new("root.crt", TEST_CA_PEM, 0o644);
    let home_dir = home.0.parent().unwrap().join("home");
    std::fs::create_dir_all(home_dir.join(".postgresql")).unwrap();
    std::fs::write(home_dir.join(".postgresql/root.crt"), TEST_CA_PEM).unwrap();
    let o = parse(
        "user=u sslmode=verify-ca",
        &[("HOME", home_dir.to_str().unwrap())],
    )
    .unwrap();
    assert_eq!(o.tls.verify, crate::tls::Verify::Chain);

    // Files are read now: missing or malformed ones are config errors naming the file.
    let e = parse(
        "user=u sslmode=verify-ca sslrootcert=/nonexistent/ca.pem",
        &[],
    )
    .unwrap_err();
    assert!(
        e.is_config() && e.to_string().contains("/nonexistent/ca.pem"),
        "{e}"
    );
    let junk = TempFile::new("junk.pem", "not a certificate", 0o644);
    let e = parse(
        &format!("user=u sslmode=verify-ca sslrootcert={}", junk.path()),
        &[],
    )
    .unwrap_err();
    assert!(e.is_config() && e.to_string().contains("junk.pem"), "{e}");

    // sslrootcert=system means verify-full, and refuses weaker modes.
    let e = parse("user=u sslrootcert=system sslmode=require", &[]).unwrap_err();
    assert!(e.to_string().contains("verify-full"), "{e}");

    // Direct TLS needs a mode that requires TLS.
    let e = parse("user=u sslnegotiation=direct", &[]).unwrap_err();
    assert!(e.to_string().contains("sslnegotiation=direct"), "{e}");
    let o = parse("user=u sslnegotiation=direct sslmode=require", &[]).unwrap();
    assert!(o.tls.direct);
    assert_eq!(
        o.pg.get_ssl_negotiation(),
        tokio_postgres::config::SslNegotiation::Direct
    );

    // verify-full checks `host`, never `hostaddr`, and needs one.
    let o = parse(
        &format!(
            "host=db.example hostaddr=127.0.0.1 user=u sslmode=verify-full sslrootcert={}",
            ca.path()
        ),
        &[],
    )
    .unwrap();
    assert_eq!(
        o.targets,
        [Target::Tcp {
            host: "127.0.0.1".into(),
            port: 5432,
            tls_name: Some("db.example".into()),
            session_tls: false,
        }]
    );
    let e = parse(
        &format!(
            "hostaddr=127.0.0.1 user=u sslmode=verify-full sslrootcert={}",
            ca.path()
        ),
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("hostaddr"), "{e}");

    // Protocol versions.
    let e = parse("user=u ssl_min_protocol_version=TLSv1.1", &[]).unwrap_err();
    assert!(e.is_config(), "{e:?}");
    let e = parse(
        "user=u ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=TLSv1.2",
        &[],
    )
    .unwrap_err();
    assert!(e.is_config(), "{e:?}");
    parse("user=u ssl_min_protocol_version=TLSv1.3", &[]).unwrap();
}

#[cfg(all(feature = "tls", unix))]
#[test]
fn client_certificates_are_loaded_and_keys_guarded() {
    let cert = TempFile::new("client.crt", TEST_CA_PEM, 0o644);
    let key = TempFile::new("client.key", TEST_KEY_PEM, 0o600);
    let o = parse(
        &format!(
            "user=u sslmode=require sslcert={} sslkey={}",
            cert.path(),
            key.path()
        ),
        &[],
    )
    .unwrap();
    assert!(o.tls.client_cert.is_some());
    let o = parse(
        "user=u sslmode=require",
        &[("PGSSLCERT", cert.path()), ("PGSSLKEY", key.path())],
    )
    .unwrap();
    assert!(o.tls.client_cert.is_some());
    // libpq refuses a key others can read.
    let open_key = TempFile::new("open.key", TEST_KEY_PEM, 0o644);
    let e = parse(
        &format!(
            "user=u sslmode=require sslcert={} sslkey={}",
            cert.path(),
            open_key.path()
        ),
        &[],
    )
    .unwrap_err();
    assert!(e.is_config() && e.to_string().contains("0600"), "{e}");
    // Never a key's bytes in a message.
    let not_key = TempFile::new("not.key", "SECRETKEYMATERIAL", 0o600);
    let e = parse(
        &format!(
            "user=u sslmode=require sslcert={} sslkey={}",
            cert.path(),
            not_key.path()
        ),
        &[],
    )
    .unwrap_err();
    assert!(!e.to_string().contains("SECRETKEYMATERIAL"), "{e}");
    let encrypted = TempFile::new(
        "enc.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        0o600,
    );
    let e = parse(
        &format!(
            "user=u sslmode=require sslcert={} sslkey={} sslpassword=hunter2",
            cert.path(),
            encrypted.path()
        ),
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("encrypted"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = parse(&format!("user=u sslcert={}", cert.path()), &[]).unwrap_err();
    assert!(e.to_string().contains("sslkey"), "{e}");
}

#[test]
fn passwords_with_odd_characters_never_show() {
    const PW: &str = r#"p@ss w'rd\ "q" ;&?=%41é"#;
    let escaped = PW.replace('\\', "\\\\").replace('\'', "\\'");
    let o = parse(&format!("host=h user=u password='{escaped}'"), &[]).unwrap();
    assert_eq!(o.pg.get_password(), Some(PW.as_bytes()));
    let d = format!("{o:?}");
    for part in ["p@ss", "w'rd", "\"q\"", "%41é"] {
        assert!(!d.contains(part), "{d}");
    }
    for dsn in [
        format!("host=h port=bad password='{escaped}'"),
        format!("host=h user=u password='{escaped}' sslmode=verify-nothing"),
        format!("host=h user=u password='{escaped}"),
        format!("host=h user=u password='{escaped}' nonsense"),
    ] {
        let e = parse(&dsn, &[]).unwrap_err();
        for text in [e.to_string(), format!("{e:?}")] {
            for part in ["p@ss", "w'rd", "%41é"] {
                assert!(!text.contains(part), "{dsn}: {text}");
            }
        }
    }
}

#[test]
fn session_selection_keys_are_ours() {
    use crate::config::{LoadBalanceHosts, TargetSessionAttrs};
    let o = parse(
        "host=a,b target_session_attrs=prefer-standby load_balance_hosts=random",
        &[],
    )
    .unwrap();
    assert_eq!(
        o.get_target_session_attrs(),
        TargetSessionAttrs::PreferStandby
    );
    assert_eq!(o.get_load_balance_hosts(), LoadBalanceHosts::Random);
    let o = parse("postgresql://a,b/db?target_session_attrs=standby", &[]).unwrap();
    assert_eq!(o.get_target_session_attrs(), TargetSessionAttrs::Standby);
    let o = parse(
        "host=a",
        &[
            ("PGTARGETSESSIONATTRS", "primary"),
            ("PGLOADBALANCEHOSTS", "random"),
        ],
    )
    .unwrap();
    assert_eq!(o.get_target_session_attrs(), TargetSessionAttrs::Primary);
    assert_eq!(o.get_load_balance_hosts(), LoadBalanceHosts::Random);
    // The string wins over the environment.
    let o = parse(
        "host=a target_session_attrs=any",
        &[("PGTARGETSESSIONATTRS", "primary")],
    )
    .unwrap();
    assert_eq!(o.get_target_session_attrs(), TargetSessionAttrs::Any);
    for bad in [
        "host=a target_session_attrs=writable",
        "host=a load_balance_hosts=yes",
    ] {
        let e = parse(bad, &[]).unwrap_err();
        assert!(e.is_config(), "{bad}: {e}");
    }
    for (value, attrs) in [
        ("any", TargetSessionAttrs::Any),
        ("read-write", TargetSessionAttrs::ReadWrite),
        ("read-only", TargetSessionAttrs::ReadOnly),
        ("primary", TargetSessionAttrs::Primary),
        ("standby", TargetSessionAttrs::Standby),
        ("prefer-standby", TargetSessionAttrs::PreferStandby),
    ] {
        assert_eq!(value.parse::<TargetSessionAttrs>().unwrap(), attrs);
        assert_eq!(attrs.as_str(), value);
    }
}
