//! Hostile input: malformed DSNs, unknown hosts, wrong parameters, NUL bytes, huge queries, arbitrary values.

use momoko_core::{Connection, Pool};

use crate::Ctx;

/// Exploration.
pub async fn malformed_dsns_and_unknown_hosts(ctx: &Ctx) {
    const PW: &str = "Sup3rSecretPw";
    let cases = [
        format!("host=a port=notaport password={PW}"),
        format!("host=a port=65536 password={PW}"),
        format!("host=a port=-1 password={PW}"),
        format!("host=a port= password={PW}"),
        format!("postgresql://u:{PW}@h:99999/db"),
        format!("postgresql://u:{PW}@h:port/db"),
        format!("postgresql://u:{PW}@[::1/db"),
        format!("postgresql://u:{PW}@h/db%zz"),
        format!("postgresql://u:{PW}@h/db?sslmode=bogus"),
        format!("postgresql://u:{PW}@h/db?no_such_param=1"),
        format!("postgres://u:{PW}@h:5432,h2:x/db"),
        format!("host='unterminated password={PW}"),
        format!("host=a password='{PW}"),
        format!("host=a password={PW} application_name='x"),
        format!("host=a password={PW}\\"),
        format!("sslmode=bogus password={PW}"),
        format!("host=a,,b port=1,2,3 password={PW}"),
        format!("host=a,,b password={PW}"),
        format!("host=, password={PW}"),
        format!("host=a,b port=1,2,3 password={PW}"),
        format!("host=a port=1,,2 password={PW}"),
        format!("hostaddr=not.an.ip password={PW}"),
        format!("hostaddr=999.1.1.1 password={PW}"),
        format!("hostaddr=1.2.3.4,zz password={PW}"),
        format!("host=a,b hostaddr=1.2.3.4 password={PW}"),
        format!("connect_timeout=abc password={PW}"),
        format!("connect_timeout=-5 password={PW}"),
        format!("keepalives=maybe password={PW}"),
        format!("keepalives_idle=x password={PW}"),
        format!("tcp_user_timeout=x password={PW}"),
        format!("target_session_attrs=sometimes password={PW}"),
        format!("channel_binding=bogus password={PW}"),
        format!("load_balance_hosts=bogus password={PW}"),
        format!("nosuchkey=1 password={PW}"),
        format!("=value password={PW}"),
        format!("password={PW} key"),
        format!("a b c password={PW}"),
        format!("password={PW} host=a\0b"),
        format!("password={PW} user=\0"),
        format!("password='{PW}' host=a port=1 port=x"),
        "postgresql://".to_owned(),
        "postgresql://:@:/".to_owned(),
        "postgresql://h:0/db".to_owned(),
        "host=''".to_owned(),
        "port=0".to_owned(),
        "port=70000".to_owned(),
        "=".to_owned(),
        "'".to_owned(),
        "\\".to_owned(),
        format!("{}", "x".repeat(100_000)),
    ];
    for dsn in &cases {
        let shown: String = dsn.chars().take(60).collect();
        match Connection::connect(dsn, ctx.executor.clone()).await {
            Ok(_) => eprintln!("DIAG {shown:?}: connected!?"),
            Err(e) => eprintln!("DIAG {shown:?}: {:?} {e}", e.kind()),
        }
        match Pool::builder(dsn, ctx.executor.clone()).connect().await {
            Ok(_) => eprintln!("DIAG   pool {shown:?}: connected!?"),
            Err(e) => eprintln!("DIAG   pool: {:?} {e}", e.kind()),
        }
    }
}
