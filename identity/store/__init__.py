"""PostgreSQL storage: connection pool, migrations, repositories, embedded server."""
