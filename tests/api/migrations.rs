//! Migrations on a database where the web app already made `user_sessions`.

use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn migrations_keep_an_existing_user_sessions_table_and_its_rows(pool: PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE user_sessions (
            id SERIAL PRIMARY KEY,
            session_id VARCHAR(64) UNIQUE NOT NULL,
            username VARCHAR(50) NOT NULL,
            session_data TEXT,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            expires_at TIMESTAMP NOT NULL,
            is_active BOOLEAN DEFAULT TRUE
        );
        INSERT INTO user_sessions (session_id, username, session_data, expires_at)
        SELECT 'sid-' || i, 'user-' || (i % 10), '{\"i\": ' || i || '}', now() + interval '1 hour'
        FROM generate_series(1, 500) AS i;",
    )
    .execute(&pool)
    .await
    .unwrap();

    session_worker::store::migrate(&pool).await.unwrap();
    // Twice, as every deploy (and every instance) does.
    session_worker::store::migrate(&pool).await.unwrap();

    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_sessions WHERE session_data LIKE '{\"i\": %'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, 500);
    let index: String = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'user_sessions' AND indexname = 'user_sessions_username_idx'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(index.contains("(username)"), "{index}");
    // The purge's: built CONCURRENTLY on the table full of rows, and usable.
    for (name, definition) in [
        ("user_sessions_username_idx", "(username)"),
        ("user_sessions_expires_at_idx", "(expires_at)"),
        (
            "user_sessions_deactivated_idx",
            "(expires_at) WHERE (is_active = false)",
        ),
    ] {
        let (index, valid): (String, bool) = sqlx::query_as(
            "SELECT indexdef, indisvalid FROM pg_indexes \
             JOIN pg_index ON indexrelid = (schemaname || '.' || indexname)::regclass \
             WHERE tablename = 'user_sessions' AND indexname = $1",
        )
        .bind(name)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(index.ends_with(definition), "{index}");
        assert!(valid, "{name}");
    }

    // The lookup the webhook makes uses the index, not a scan of the table.
    sqlx::raw_sql("ANALYZE user_sessions")
        .execute(&pool)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id, session_data FROM user_sessions \
         WHERE username = 'user-3' AND is_active AND expires_at > (now() AT TIME ZONE 'UTC')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        plan.join("\n").contains("user_sessions_username_idx"),
        "{plan:?}"
    );

    let view_columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_name = 'user_subscription_status' ORDER BY ordinal_position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    // The web app's four columns first, as they always were; the rest after.
    let expected: Vec<(String, String)> = [
        ("username", "text"),
        ("subscribed", "boolean"),
        ("status", "text"),
        ("current_period_end", "timestamp without time zone"),
        ("subscription_id", "text"),
        ("price_id", "text"),
        ("product_id", "text"),
        ("lookup_key", "text"),
        ("quantity", "integer"),
        ("cancel_at_period_end", "boolean"),
        ("cancel_at", "timestamp without time zone"),
        ("trial_end", "timestamp without time zone"),
        ("features", "ARRAY"),
    ]
    .into_iter()
    .map(|(name, kind)| (name.into(), kind.into()))
    .collect();
    assert_eq!(view_columns, expected);
}
