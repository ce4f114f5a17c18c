//! The async-std backend needs no tokio runtime: none exists while it connects and queries.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

fn tokio_threads() -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for task in dir.flatten() {
            if let Ok(name) = std::fs::read_to_string(task.path().join("comm")) {
                let name = name.trim().to_owned();
                if name.starts_with("tokio") || name.contains("compat") {
                    names.push(name);
                }
            }
        }
    }
    names
}

#[test]
fn queries_run_with_no_tokio_runtime_in_the_process() {
    let db = momoko_testkit::test_db("no_tokio_runtime");
    async_std::task::block_on(async {
        assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "no tokio runtime context exists"
        );
        let conn = momoko_async_std::connect(&db.dsn()).await.expect("connect");
        let mut cursor = conn
            .execute("SELECT $1::int4 * 2", &[&21i32])
            .await
            .expect("query");
        assert_eq!(cursor.fetchone().map(|r| r.get::<_, i32>(0)), Some(42));
        conn.cancel()
            .await
            .expect("a cancel request over a fresh stream");
        drop(conn);
        assert!(tokio::runtime::Handle::try_current().is_err());
    });
    assert_eq!(
        tokio_threads(),
        Vec::<String>::new(),
        "no tokio runtime thread was started"
    );
}
