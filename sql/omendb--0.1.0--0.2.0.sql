-- omendb 0.1.0 -> 0.2.0.
--
-- The index layout changed (version 3: node records carry their neighbours' codes, vectors
-- live in vector records, every page has a kind). Indexes built by 0.1.0 give an ERROR
-- that says to REINDEX; nothing in SQL can convert them, so this script leaves them alone
-- and says so.
--
-- In SQL: the functions whose bodies are parsed at each call name everything with its
-- schema (safe against a hostile search_path), and the inspection functions get the
-- privileges of contrib's tools (README, "Privileges").

CREATE OR REPLACE FUNCTION omen_array_to_vector(numeric[], integer, boolean) RETURNS vector
    AS $$ SELECT @extschema@.omen_array_to_vector($1::real[], $2, $3) $$ LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE;
CREATE OR REPLACE FUNCTION omen_vector_to_numeric(vector, integer, boolean) RETURNS numeric[]
    AS $$ SELECT @extschema@.omen_vector_to_float8($1, $2, $3)::numeric[] $$ LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE;
CREATE OR REPLACE FUNCTION omen_vector_to_int4(vector, integer, boolean) RETURNS integer[]
    AS $$ SELECT @extschema@.omen_vector_to_float8($1, $2, $3)::integer[] $$ LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE;

CREATE OR REPLACE FUNCTION omen_index_info(index regclass, OUT nodes bigint, OUT deleted_nodes bigint,
        OUT free_slots bigint, OUT pages bigint, OUT average_degree float8, OUT entry_point bigint, OUT entry_tid tid, OUT dimensions int,
        OUT metric text, OUT max_neighbors int, OUT build_list_size int, OUT alpha float8,
        OUT buffered_entries bigint, OUT buffer_pages bigint, OUT merges_done bigint, OUT merged_entries bigint,
        OUT last_merge_at timestamptz, OUT last_merge_ms bigint)
    AS $$ SELECT r.nodes, r.deleted_nodes, r.free_slots, r.pages, r.average_degree, r.entry_point, r.entry_tid,
              r.dimensions, r.metric, r.max_neighbors, r.build_list_size, r.alpha, r.buffered_entries,
              r.buffer_pages, r.merges_done, r.merged_entries, pg_catalog.to_timestamp(r.last_merge_epoch), r.last_merge_ms
         FROM pg_catalog.json_to_record(@extschema@.omen_index_info_json($1)::pg_catalog.text::pg_catalog.json) AS r(
        nodes bigint, deleted_nodes bigint, free_slots bigint, pages bigint, average_degree double precision,
        entry_point bigint, entry_tid pg_catalog.tid, dimensions int, metric pg_catalog.text, max_neighbors int,
        build_list_size int, alpha double precision, buffered_entries bigint, buffer_pages bigint, merges_done bigint,
        merged_entries bigint, last_merge_epoch double precision, last_merge_ms bigint) $$ LANGUAGE sql STRICT;
CREATE OR REPLACE FUNCTION omen_check(index regclass, OUT ok boolean, OUT nodes bigint,
        OUT reachable bigint, OUT table_rows bigint, OUT problems text[], OUT buffered bigint)
    AS $$ SELECT r.ok, r.nodes, r.reachable, r.table_rows,
              ARRAY(SELECT pg_catalog.json_array_elements_text(r.problems)), r.buffered
         FROM pg_catalog.json_to_record(@extschema@.omen_check_json($1)::pg_catalog.text::pg_catalog.json) AS r(
             ok boolean, nodes bigint, reachable bigint, table_rows bigint, problems pg_catalog.json, buffered bigint) $$
    LANGUAGE sql STRICT;

REVOKE ALL ON FUNCTION omen_index_info(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION omen_index_info(regclass) TO pg_stat_scan_tables;
REVOKE ALL ON FUNCTION omen_check(regclass) FROM PUBLIC;

DO $$
DECLARE
    n int;
BEGIN
    SELECT pg_catalog.count(*) INTO n FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_am a ON a.oid OPERATOR(pg_catalog.=) c.relam
        WHERE a.amname OPERATOR(pg_catalog.=) 'omen';
    IF n OPERATOR(pg_catalog.>) 0 THEN
        RAISE NOTICE 'omendb 0.2.0 stores omen indexes in a new layout: REINDEX the % omen index(es) of this database before using them', n;
    END IF;
END
$$;
