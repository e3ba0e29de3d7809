-- Upgrade: omendb 0.1.0 (its install script is kept) updates to the current version with
-- ALTER EXTENSION, and an omen index built afterwards works. In a database of its own.
\set regress_db :DBNAME
CREATE DATABASE regress_omen_upgrade;
\c regress_omen_upgrade
CREATE EXTENSION omendb VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'omendb';
-- 0.1.0: inspection was open to everyone.
SELECT has_function_privilege('public', 'omen_index_info(regclass)', 'EXECUTE') AS info_public;
CREATE TABLE items (id int, v vector(3));
INSERT INTO items SELECT i, ARRAY[i % 10, i / 10 % 10, i / 100]::real[]::vector FROM generate_series(0, 999) i;
ALTER EXTENSION omendb UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'omendb';
SELECT has_function_privilege('public', 'omen_index_info(regclass)', 'EXECUTE') AS info_public,
       has_function_privilege('pg_stat_scan_tables', 'omen_index_info(regclass)', 'EXECUTE') AS info_scan_tables,
       has_function_privilege('public', 'omen_check(regclass)', 'EXECUTE') AS check_public;
CREATE INDEX items_v ON items USING omen (v);
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <-> '[3.1,4.2,5.4]' LIMIT 3;
SELECT id, round((v <-> '[3.1,4.2,5.4]')::numeric, 3) AS d FROM items ORDER BY v <-> '[3.1,4.2,5.4]' LIMIT 3;
SELECT ok, nodes, table_rows FROM omen_check('items_v');
-- The functions updated by the script behave as the freshly installed ones.
SELECT '[1,2,3]'::vector::numeric[] AS as_numeric, '{1,2,3}'::numeric[]::vector AS from_numeric;
\c :regress_db
DROP DATABASE regress_omen_upgrade WITH (FORCE);
