//! Typed rows: a row read into a struct by column name (`#[derive(FromRow)]`), through the
//! cursor and the query trait; a row that does not fit is a clear `Conversion` error that
//! loses nothing.

use momoko_core::{postgres_from_row, ErrorKind, FromRow, Queryable};

use crate::support::assert_settled;
use crate::Ctx;

#[derive(Debug, PartialEq, FromRow)]
struct Item {
    id: i32,
    name: String,
    note: Option<String>,
    #[from_row(rename = "qty")]
    quantity: i64,
}

#[derive(Debug, PartialEq, FromRow)]
struct Named {
    name: String,
}

/// Structs from rows: every row, the next one, one, an optional one, a scalar; on the pool, a
/// transaction and a cursor. A missing column or a wrong type is a `Conversion` error and the
/// cursor's position does not move.
pub async fn rows_into_structs(ctx: &Ctx) {
    let pool = ctx.pool_builder().size(1).connect().await.unwrap();
    pool.batch_execute(
        "CREATE TABLE item (id int PRIMARY KEY, name text NOT NULL, note text, qty int8 NOT NULL); \
         INSERT INTO item VALUES (1, 'pen', NULL, 10), (2, 'ink', 'blue', 3)",
    )
    .await
    .unwrap();
    let all: Vec<Item> = pool
        .fetch_all("SELECT * FROM item ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(
        all,
        [
            Item {
                id: 1,
                name: "pen".into(),
                note: None,
                quantity: 10
            },
            Item {
                id: 2,
                name: "ink".into(),
                note: Some("blue".into()),
                quantity: 3
            },
        ]
    );
    let tx = pool.begin().await.unwrap();
    let one: Item = tx
        .fetch_one("SELECT * FROM item WHERE id = $1", &[&2i32])
        .await
        .unwrap();
    assert_eq!(one.note.as_deref(), Some("blue"));
    let none: Option<Item> = tx
        .fetch_optional("SELECT * FROM item WHERE id = $1", &[&3i32])
        .await
        .unwrap();
    assert_eq!(none, None);
    let e = tx
        .fetch_one::<Item>("SELECT * FROM item WHERE id = $1", &[&3i32])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion, "{e:?}");
    let total: i64 = tx
        .fetch_scalar("SELECT sum(qty)::int8 FROM item", &[])
        .await
        .unwrap();
    assert_eq!(total, 13);
    tx.commit().await.unwrap();

    let mut cursor = pool
        .execute("SELECT id, name FROM item ORDER BY id", &[])
        .await
        .unwrap();
    // `id` and `name` only: `Item` lacks columns, `Named` fits.
    let e = cursor.fetch_as::<Item>().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion, "{e:?}");
    assert_eq!(
        cursor.remaining(),
        2,
        "nothing was consumed by the failed read"
    );
    let first: Option<Named> = cursor.fetchone_as().unwrap();
    assert_eq!(first, Some(Named { name: "pen".into() }));
    let rest: Vec<Named> = cursor.fetch_as().unwrap();
    assert_eq!(rest, [Named { name: "ink".into() }]);
    assert_eq!(cursor.fetchone_as::<Named>().unwrap(), None);

    // A wrong type: text into i64.
    let e = pool
        .fetch_all::<Item>("SELECT id, name, note, name AS qty FROM item", &[])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conversion, "{e:?}");
    assert_settled(ctx, &pool).await;
}
