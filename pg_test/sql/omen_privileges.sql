-- Privileges, as PostgreSQL's own tools grant them (README, "Privileges"): inspection is
-- for superusers and pg_stat_scan_tables (as pgstattuple), verification for whom a
-- superuser grants it (as amcheck) and needs no privilege on the table, maintenance for
-- the table's owner (as VACUUM and REINDEX; from PostgreSQL 17, the MAINTAIN privilege).
-- Each refusal is followed by its SQLSTATE. Roles are cluster-wide: dropped at the end.

-- The install script is safe against objects planted in the extension's schema: here an
-- operator oid = regtype and a format() that fit its calls better than pg_catalog's (both
-- were called by the script before it qualified its names). In a database of its own, so
-- that this one keeps its extension.
\set regress_db :DBNAME
CREATE DATABASE regress_omen_install;
\c regress_omen_install
CREATE FUNCTION public.regress_captured(oid, regtype) RETURNS boolean
    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'captured: operator ='; END $$;
CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regtype, FUNCTION = public.regress_captured);
CREATE FUNCTION public.format(text, text, text, text, text) RETURNS text
    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'captured: format'; END $$;
CREATE EXTENSION omendb;
SELECT extname, extnamespace::regnamespace AS schema FROM pg_extension WHERE extname = 'omendb';
\c :regress_db
DROP DATABASE regress_omen_install WITH (FORCE);

CREATE ROLE regress_omen_reader;
CREATE ROLE regress_omen_owner;
CREATE TABLE items (id int PRIMARY KEY, v vector(3)) WITH (autovacuum_enabled = off);
INSERT INTO items SELECT i, ARRAY[sin(i), cos(i), sin(i * 0.1)]::real[]::vector FROM generate_series(1, 200) i;
CREATE INDEX items_v ON items USING omen (v) WITH (buffer_threshold = 100000000);
-- Rows for the insert buffer, which omen_flush merges.
INSERT INTO items SELECT i, ARRAY[sin(i), cos(i), sin(i * 0.1)]::real[]::vector FROM generate_series(201, 250) i;
ALTER TABLE items OWNER TO regress_omen_owner;

-- Who may execute what, as installed. The internal *_json functions are PUBLIC and check
-- inside that the user may execute their wrapper; omen_flush checks the table.
SELECT f AS function, has_function_privilege('regress_omen_reader', f, 'EXECUTE') AS public,
       has_function_privilege('pg_stat_scan_tables', f, 'EXECUTE') AS pg_stat_scan_tables
FROM unnest(ARRAY['omen_index_info(regclass)', 'omen_index_info_json(regclass)', 'omen_check(regclass)',
                  'omen_check_json(regclass)', 'omen_flush(regclass)']) f;

-- A role with no privilege: every function refuses it, the internal ones too.
SET ROLE regress_omen_reader;
SELECT count(*) FROM items;
\echo SQLSTATE :SQLSTATE
SELECT nodes FROM omen_index_info('items_v');
\echo SQLSTATE :SQLSTATE
SELECT omen_index_info_json('items_v');
\echo SQLSTATE :SQLSTATE
SELECT ok FROM omen_check('items_v');
\echo SQLSTATE :SQLSTATE
SELECT omen_check_json('items_v');
\echo SQLSTATE :SQLSTATE
SELECT omen_flush('items_v');
\echo SQLSTATE :SQLSTATE
RESET ROLE;

-- Granted inspection (pg_stat_scan_tables) and verification (EXECUTE on omen_check alone):
-- both work, omen_check without SELECT on the table, which the role still cannot read.
GRANT pg_stat_scan_tables TO regress_omen_reader;
GRANT EXECUTE ON FUNCTION omen_check(regclass) TO regress_omen_reader;
SET ROLE regress_omen_reader;
SELECT count(*) FROM items;
\echo SQLSTATE :SQLSTATE
SELECT nodes, buffered_entries, dimensions, metric FROM omen_index_info('items_v');
SELECT omen_index_info_json('items_v')::text::json->>'nodes' AS nodes_from_json;
SELECT ok, nodes, table_rows, buffered, problems FROM omen_check('items_v');
SELECT omen_check_json('items_v')::text::json->>'ok' AS ok_from_json;
-- Maintenance is not inspection: omen_flush still needs the table.
SELECT omen_flush('items_v');
\echo SQLSTATE :SQLSTATE
RESET ROLE;

-- Nor is reading: SELECT on the table does not let a role merge its buffer.
GRANT SELECT ON items TO regress_omen_reader;
SET ROLE regress_omen_reader;
SELECT count(*) FROM items;
SELECT omen_flush('items_v');
\echo SQLSTATE :SQLSTATE
RESET ROLE;
REVOKE SELECT ON items FROM regress_omen_reader;

-- The table's owner flushes; an ordinary owner without pg_stat_scan_tables cannot inspect.
SET ROLE regress_omen_owner;
SELECT omen_flush('items_v') AS merged;
SELECT nodes FROM omen_index_info('items_v');
\echo SQLSTATE :SQLSTATE
RESET ROLE;
SELECT nodes, buffered_entries FROM omen_index_info('items_v');

-- From PostgreSQL 17, MAINTAIN on the table is what VACUUM and REINDEX need, and omen_flush
-- (the buffer is empty now: it merges nothing, and is not refused).
SELECT current_setting('server_version_num')::int >= 170000 AS has_maintain \gset
\if :has_maintain
GRANT MAINTAIN ON items TO regress_omen_reader;
SET ROLE regress_omen_reader;
SELECT omen_flush('items_v') AS merged;
RESET ROLE;
REVOKE MAINTAIN ON items FROM regress_omen_reader;
\endif

-- Revoked from pg_stat_scan_tables, inspection is refused again, the internal function too.
REVOKE EXECUTE ON FUNCTION omen_index_info(regclass) FROM pg_stat_scan_tables;
SET ROLE regress_omen_reader;
SELECT nodes FROM omen_index_info('items_v');
\echo SQLSTATE :SQLSTATE
SELECT omen_index_info_json('items_v');
\echo SQLSTATE :SQLSTATE
RESET ROLE;
GRANT EXECUTE ON FUNCTION omen_index_info(regclass) TO pg_stat_scan_tables;

-- omen_check reads the heap itself: vectors stored out of line (TOAST), NULLs and, with
-- the cosine metric, zero vectors (not indexed) are counted as the build counts them; an
-- expression index has no table_rows.
CREATE TABLE wide (id int, v vector(600)) WITH (autovacuum_enabled = off);
INSERT INTO wide SELECT i, array_fill(i::real, ARRAY[600])::vector FROM generate_series(0, 20) i;
INSERT INTO wide VALUES (99, NULL);
CREATE INDEX wide_cos ON wide USING omen (v vector_cosine_ops);
CREATE INDEX wide_expr ON wide USING omen ((v + v));
SET ROLE regress_omen_reader;
SELECT ok, nodes, table_rows, problems FROM omen_check('wide_cos');
SELECT ok, nodes, table_rows, problems FROM omen_check('wide_expr');
RESET ROLE;

-- A hostile search_path: the SQL functions' bodies name what they call with its schema,
-- so functions planted in a schema searched before pg_catalog are not called...
CREATE SCHEMA regress_hostile;
CREATE FUNCTION regress_hostile.json_to_record(json) RETURNS record
    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'captured: json_to_record'; END $$;
CREATE FUNCTION regress_hostile.json_array_elements_text(json) RETURNS SETOF text
    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'captured: json_array_elements_text'; END $$;
CREATE FUNCTION regress_hostile.to_timestamp(double precision) RETURNS timestamptz
    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'captured: to_timestamp'; END $$;
CREATE FUNCTION regress_hostile.omen_vector_to_float8(vector, integer, boolean) RETURNS float8[]
    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'captured: omen_vector_to_float8'; END $$;
SET search_path = regress_hostile, public, pg_catalog;
SELECT nodes, last_merge_at IS NOT NULL AS merged_before FROM omen_index_info('items_v');
SELECT ok, problems FROM omen_check('items_v');
SELECT '[1.5,2]'::vector::numeric[] AS as_numeric, '[1,2]'::vector::integer[] AS as_int;
-- ...and they work without the extension's schema on the search_path.
SET search_path = pg_catalog;
SELECT nodes FROM public.omen_index_info('public.items_v');
SELECT ok FROM public.omen_check('public.items_v');
SELECT '{1.5,2}'::numeric[]::public.vector AS from_numeric, '[1.5,2]'::public.vector::numeric[] AS to_numeric;
RESET search_path;
DROP SCHEMA regress_hostile CASCADE;

DROP TABLE items, wide;
REVOKE pg_stat_scan_tables FROM regress_omen_reader;
REVOKE EXECUTE ON FUNCTION omen_check(regclass) FROM regress_omen_reader;
DROP ROLE regress_omen_reader, regress_omen_owner;
