"""ClickHouse: the embedded server over chdb, the client factory, migrations."""
