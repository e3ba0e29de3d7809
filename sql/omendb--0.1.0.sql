-- The install script of omendb 0.1.0, kept so that `CREATE EXTENSION omendb VERSION '0.1.0'`
-- and `ALTER EXTENSION omendb UPDATE` (omendb--0.1.0--0.2.0.sql) can be tested. `make install`
-- copies it next to the generated omendb--0.2.0.sql (cargo pgrx install copies upgrade scripts only).

-- omendb: the vector type and its functions.
--
-- Hand-written so that it can live beside pgvector. When a `vector` type already exists
-- (pgvector installed first), omendb adopts it: both use the same storage layout, so
-- omendb's functions work on pgvector's columns. It then creates only what is missing.
-- Its own functions always exist under an `omen_` prefix; the user-facing names
-- (operators, l2_distance, casts, aggregates, the btree opclass) are created only where
-- absent. Everything created here belongs to the extension, so DROP EXTENSION omendb
-- removes exactly that and leaves an adopted pgvector type and its data alone.

-- Runs `ddl` unless `present`. Dropped at the end of this script.
CREATE FUNCTION omen_create_unless(present boolean, ddl text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT present THEN
        EXECUTE ddl;
    END IF;
END
$$;

-- Whether a cast from `source` to `target` exists.
CREATE FUNCTION omen_cast_exists(source regtype, target regtype) RETURNS boolean
LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM pg_cast WHERE castsource = source AND casttarget = target)
$$;

-- The type: a shell first, so its I/O functions can name it.
SELECT omen_create_unless(to_regtype('vector') IS NOT NULL, 'CREATE TYPE vector');

CREATE FUNCTION omen_vector_in(cstring, oid, integer) RETURNS vector
    AS 'MODULE_PATHNAME', 'omen_vector_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_out(vector) RETURNS cstring
    AS 'MODULE_PATHNAME', 'omen_vector_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_typmod_in(cstring[]) RETURNS integer
    AS 'MODULE_PATHNAME', 'omen_vector_typmod_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_recv(internal, oid, integer) RETURNS vector
    AS 'MODULE_PATHNAME', 'omen_vector_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_send(vector) RETURNS bytea
    AS 'MODULE_PATHNAME', 'omen_vector_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

SELECT omen_create_unless(
    (SELECT typisdefined FROM pg_type t WHERE t.typname = 'vector' AND pg_type_is_visible(t.oid)),
    $ddl$CREATE TYPE vector (
        INPUT     = omen_vector_in,
        OUTPUT    = omen_vector_out,
        TYPMOD_IN = omen_vector_typmod_in,
        RECEIVE   = omen_vector_recv,
        SEND      = omen_vector_send,
        STORAGE   = external
    )$ddl$);

-- omendb's own functions: always present, whichever type is in use.
CREATE FUNCTION omen_vector_typmod(vector, integer, boolean) RETURNS vector
    AS 'MODULE_PATHNAME', 'omen_vector_typmod' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_l2_distance(vector, vector) RETURNS float8
    AS 'MODULE_PATHNAME', 'omen_l2_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_l2_squared_distance(vector, vector) RETURNS float8
    AS 'MODULE_PATHNAME', 'omen_l2_squared_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_inner_product(vector, vector) RETURNS float8
    AS 'MODULE_PATHNAME', 'omen_inner_product' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_negative_inner_product(vector, vector) RETURNS float8
    AS 'MODULE_PATHNAME', 'omen_negative_inner_product' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_cosine_distance(vector, vector) RETURNS float8
    AS 'MODULE_PATHNAME', 'omen_cosine_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_l1_distance(vector, vector) RETURNS float8
    AS 'MODULE_PATHNAME', 'omen_l1_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_dims(vector) RETURNS integer
    AS 'MODULE_PATHNAME', 'omen_vector_dims' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_norm(vector) RETURNS float8
    AS 'MODULE_PATHNAME', 'omen_vector_norm' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_l2_normalize(vector) RETURNS vector
    AS 'MODULE_PATHNAME', 'omen_l2_normalize' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_subvector(vector, integer, integer) RETURNS vector
    AS 'MODULE_PATHNAME', 'omen_subvector' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_add(vector, vector) RETURNS vector
    AS 'MODULE_PATHNAME', 'omen_vector_add' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_sub(vector, vector) RETURNS vector
    AS 'MODULE_PATHNAME', 'omen_vector_sub' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_mul(vector, vector) RETURNS vector
    AS 'MODULE_PATHNAME', 'omen_vector_mul' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_cmp(vector, vector) RETURNS integer
    AS 'MODULE_PATHNAME', 'omen_vector_cmp' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_lt(vector, vector) RETURNS boolean
    AS 'MODULE_PATHNAME', 'omen_vector_lt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_le(vector, vector) RETURNS boolean
    AS 'MODULE_PATHNAME', 'omen_vector_le' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_eq(vector, vector) RETURNS boolean
    AS 'MODULE_PATHNAME', 'omen_vector_eq' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_ne(vector, vector) RETURNS boolean
    AS 'MODULE_PATHNAME', 'omen_vector_ne' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_ge(vector, vector) RETURNS boolean
    AS 'MODULE_PATHNAME', 'omen_vector_ge' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_gt(vector, vector) RETURNS boolean
    AS 'MODULE_PATHNAME', 'omen_vector_gt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_accum(float8[], vector) RETURNS float8[]
    AS 'MODULE_PATHNAME', 'omen_vector_accum' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_combine(float8[], float8[]) RETURNS float8[]
    AS 'MODULE_PATHNAME', 'omen_vector_combine' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_avg(float8[]) RETURNS vector
    AS 'MODULE_PATHNAME', 'omen_vector_avg' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_array_to_vector(integer[], integer, boolean) RETURNS vector
    AS 'MODULE_PATHNAME', 'omen_array_to_vector' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_array_to_vector(real[], integer, boolean) RETURNS vector
    AS 'MODULE_PATHNAME', 'omen_array_to_vector' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_array_to_vector(double precision[], integer, boolean) RETURNS vector
    AS 'MODULE_PATHNAME', 'omen_array_to_vector' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_array_to_vector(numeric[], integer, boolean) RETURNS vector
    AS $$ SELECT omen_array_to_vector($1::real[], $2, $3) $$ LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_to_float4(vector, integer, boolean) RETURNS real[]
    AS 'MODULE_PATHNAME', 'omen_vector_to_float4' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_to_float8(vector, integer, boolean) RETURNS double precision[]
    AS 'MODULE_PATHNAME', 'omen_vector_to_float8' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_to_numeric(vector, integer, boolean) RETURNS numeric[]
    AS $$ SELECT omen_vector_to_float8($1, $2, $3)::numeric[] $$ LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION omen_vector_to_int4(vector, integer, boolean) RETURNS integer[]
    AS $$ SELECT omen_vector_to_float8($1, $2, $3)::integer[] $$ LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE;

-- User-facing functions, where pgvector has not created them.
SELECT omen_create_unless(to_regprocedure(sig) IS NOT NULL,
    format('CREATE FUNCTION %s RETURNS %s AS %L, %L LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE',
           sig, ret, 'MODULE_PATHNAME', sym))
FROM (VALUES
    ('l2_distance(vector, vector)',     'float8',  'omen_l2_distance'),
    ('inner_product(vector, vector)',   'float8',  'omen_inner_product'),
    ('cosine_distance(vector, vector)', 'float8',  'omen_cosine_distance'),
    ('l1_distance(vector, vector)',     'float8',  'omen_l1_distance'),
    ('vector_dims(vector)',             'integer', 'omen_vector_dims'),
    ('vector_norm(vector)',             'float8',  'omen_vector_norm'),
    ('l2_normalize(vector)',            'vector',  'omen_l2_normalize'),
    ('subvector(vector, integer, integer)', 'vector', 'omen_subvector')
) AS f(sig, ret, sym);

-- Operators, where absent.
-- (A COMMUTATOR or NEGATOR clause leaves a shell operator behind: a shell counts as absent.)
SELECT omen_create_unless(
    EXISTS (SELECT 1 FROM pg_operator WHERE oid = to_regoperator(op || '(vector,vector)') AND oprcode <> 0),
    format('CREATE OPERATOR %s (LEFTARG = vector, RIGHTARG = vector, FUNCTION = %s%s)', op, fn, extra))
FROM (VALUES
    ('<->', 'omen_l2_distance',            ', COMMUTATOR = <->'),
    ('<#>', 'omen_negative_inner_product', ', COMMUTATOR = <#>'),
    ('<=>', 'omen_cosine_distance',        ', COMMUTATOR = <=>'),
    ('<+>', 'omen_l1_distance',            ', COMMUTATOR = <+>'),
    ('+',   'omen_vector_add',             ', COMMUTATOR = +'),
    ('-',   'omen_vector_sub',             ''),
    ('*',   'omen_vector_mul',             ', COMMUTATOR = *'),
    ('<',   'omen_vector_lt', ', COMMUTATOR = >, NEGATOR = >=, RESTRICT = scalarltsel, JOIN = scalarltjoinsel'),
    ('<=',  'omen_vector_le', ', COMMUTATOR = >=, NEGATOR = >, RESTRICT = scalarlesel, JOIN = scalarlejoinsel'),
    ('=',   'omen_vector_eq', ', COMMUTATOR = =, NEGATOR = <>, RESTRICT = eqsel, JOIN = eqjoinsel'),
    ('<>',  'omen_vector_ne', ', COMMUTATOR = <>, NEGATOR = =, RESTRICT = neqsel, JOIN = neqjoinsel'),
    ('>=',  'omen_vector_ge', ', COMMUTATOR = <=, NEGATOR = <, RESTRICT = scalargesel, JOIN = scalargejoinsel'),
    ('>',   'omen_vector_gt', ', COMMUTATOR = <, NEGATOR = <=, RESTRICT = scalargtsel, JOIN = scalargtjoinsel')
) AS o(op, fn, extra);

-- The btree operator class, so ORDER BY, DISTINCT and unique indexes work.
SELECT omen_create_unless(
    EXISTS (SELECT 1 FROM pg_opclass c JOIN pg_am a ON a.oid = c.opcmethod
            WHERE a.amname = 'btree' AND c.opcintype = to_regtype('vector') AND c.opcdefault),
    $ddl$CREATE OPERATOR CLASS vector_ops DEFAULT FOR TYPE vector USING btree AS
        OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
        FUNCTION 1 omen_vector_cmp(vector, vector)$ddl$);

-- Aggregates, parallel-safe with combine functions.
SELECT omen_create_unless(to_regprocedure('avg(vector)') IS NOT NULL,
    $ddl$CREATE AGGREGATE avg(vector) (
        SFUNC = omen_vector_accum, STYPE = float8[], FINALFUNC = omen_vector_avg,
        COMBINEFUNC = omen_vector_combine, INITCOND = '{0}', PARALLEL = SAFE)$ddl$);
SELECT omen_create_unless(to_regprocedure('sum(vector)') IS NOT NULL,
    $ddl$CREATE AGGREGATE sum(vector) (
        SFUNC = omen_vector_add, STYPE = vector, COMBINEFUNC = omen_vector_add,
        PARALLEL = SAFE)$ddl$);

-- Casts, where absent. The typmod cast applies a column's dimension; vector -> real[] is
-- implicit as in pgvector; arrays -> vector on assignment; the others explicit.
SELECT omen_create_unless(omen_cast_exists(src::regtype, dst::regtype),
    format('CREATE CAST (%s AS %s) WITH FUNCTION %s(%s, integer, boolean)%s', src, dst, fn, src, how))
FROM (VALUES
    ('vector',             'vector',             'omen_vector_typmod',    ' AS IMPLICIT'),
    ('integer[]',          'vector',             'omen_array_to_vector',  ' AS ASSIGNMENT'),
    ('real[]',             'vector',             'omen_array_to_vector',  ' AS ASSIGNMENT'),
    ('double precision[]', 'vector',             'omen_array_to_vector',  ' AS ASSIGNMENT'),
    ('numeric[]',          'vector',             'omen_array_to_vector',  ' AS ASSIGNMENT'),
    ('vector',             'real[]',             'omen_vector_to_float4', ' AS IMPLICIT'),
    ('vector',             'double precision[]', 'omen_vector_to_float8', ''),
    ('vector',             'numeric[]',          'omen_vector_to_numeric', ''),
    ('vector',             'integer[]',          'omen_vector_to_int4',   '')
) AS c(src, dst, fn, how);

-- The omen index access method and its operator classes, on whichever vector type is here.
CREATE FUNCTION omen_amhandler(internal) RETURNS index_am_handler
    AS 'MODULE_PATHNAME', 'omen_amhandler' LANGUAGE C;
CREATE ACCESS METHOD omen TYPE INDEX HANDLER omen_amhandler;
COMMENT ON ACCESS METHOD omen IS 'OmenDB graph (Vamana/DiskANN) index for nearest-neighbour search';

CREATE OPERATOR CLASS vector_l2_ops DEFAULT FOR TYPE vector USING omen AS
    OPERATOR 1 <-> (vector, vector) FOR ORDER BY float_ops,
    FUNCTION 1 omen_l2_distance(vector, vector);
CREATE OPERATOR CLASS vector_ip_ops FOR TYPE vector USING omen AS
    OPERATOR 1 <#> (vector, vector) FOR ORDER BY float_ops,
    FUNCTION 1 omen_negative_inner_product(vector, vector);
CREATE OPERATOR CLASS vector_cosine_ops FOR TYPE vector USING omen AS
    OPERATOR 1 <=> (vector, vector) FOR ORDER BY float_ops,
    FUNCTION 1 omen_cosine_distance(vector, vector);
CREATE OPERATOR CLASS vector_l1_ops FOR TYPE vector USING omen AS
    OPERATOR 1 <+> (vector, vector) FOR ORDER BY float_ops,
    FUNCTION 1 omen_l1_distance(vector, vector);

-- Inspection.
CREATE FUNCTION omen_index_info_json(regclass) RETURNS cstring
    AS 'MODULE_PATHNAME', 'omen_index_info_json' LANGUAGE C STRICT;
CREATE FUNCTION omen_check_json(regclass) RETURNS cstring
    AS 'MODULE_PATHNAME', 'omen_check_json' LANGUAGE C STRICT;
CREATE FUNCTION omen_index_info(index regclass, OUT nodes bigint, OUT deleted_nodes bigint,
        OUT free_slots bigint, OUT pages bigint, OUT average_degree float8, OUT entry_point bigint, OUT entry_tid tid, OUT dimensions int,
        OUT metric text, OUT max_neighbors int, OUT build_list_size int, OUT alpha float8,
        OUT buffered_entries bigint, OUT buffer_pages bigint, OUT merges_done bigint, OUT merged_entries bigint,
        OUT last_merge_at timestamptz, OUT last_merge_ms bigint)
    AS $$ SELECT r.nodes, r.deleted_nodes, r.free_slots, r.pages, r.average_degree, r.entry_point, r.entry_tid,
              r.dimensions, r.metric, r.max_neighbors, r.build_list_size, r.alpha, r.buffered_entries,
              r.buffer_pages, r.merges_done, r.merged_entries, to_timestamp(r.last_merge_epoch), r.last_merge_ms
         FROM json_to_record(omen_index_info_json($1)::text::json) AS r(
        nodes bigint, deleted_nodes bigint, free_slots bigint, pages bigint, average_degree float8,
        entry_point bigint, entry_tid tid, dimensions int, metric text, max_neighbors int,
        build_list_size int, alpha float8, buffered_entries bigint, buffer_pages bigint, merges_done bigint,
        merged_entries bigint, last_merge_epoch float8, last_merge_ms bigint) $$ LANGUAGE sql STRICT;
CREATE FUNCTION omen_check(index regclass, OUT ok boolean, OUT nodes bigint,
        OUT reachable bigint, OUT table_rows bigint, OUT problems text[], OUT buffered bigint)
    AS $$ SELECT r.ok, r.nodes, r.reachable, r.table_rows,
              ARRAY(SELECT json_array_elements_text(r.problems)), r.buffered
         FROM json_to_record(omen_check_json($1)::text::json) AS r(
             ok boolean, nodes bigint, reachable bigint, table_rows bigint, problems json, buffered bigint) $$
    LANGUAGE sql STRICT;
CREATE FUNCTION omen_flush(index regclass) RETURNS bigint
    AS 'MODULE_PATHNAME', 'omen_flush' LANGUAGE C STRICT;

DROP FUNCTION omen_create_unless(boolean, text);
DROP FUNCTION omen_cast_exists(regtype, regtype);
