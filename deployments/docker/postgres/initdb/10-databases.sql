-- Runs once, when the PostgreSQL data directory is first created (docker-entrypoint-initdb.d).
-- Each PostgreSQL-backed service owns one database; `mesh migrate` creates their tables.
CREATE DATABASE users;
CREATE DATABASE catalog;
