-- The planner picks the omen index for ORDER BY ... LIMIT from a few thousand rows on, at
-- any dimension, and a sequential scan and a sort without a LIMIT or for tiny tables.
-- The indexes are created empty and filled through the insert buffer (no merge: the
-- threshold is out of reach), so the plans are tested without building graphs.
CREATE FUNCTION random_vector(d int) RETURNS vector
    LANGUAGE sql VOLATILE AS $$ SELECT array_agg(random())::vector FROM generate_series(1, d) $$;

CREATE TABLE p1024 (id int, v vector(1024));
CREATE INDEX p1024_v ON p1024 USING omen (v) WITH (buffer_threshold = 100000000);
INSERT INTO p1024 SELECT i, random_vector(1024) FROM generate_series(1, 10000) i;
ANALYZE p1024;
EXPLAIN (COSTS OFF) SELECT id FROM p1024 ORDER BY v <-> (SELECT v FROM p1024 WHERE id = 1) LIMIT 10;
-- A prepared statement with a parameter, as clients send it.
PREPARE q1024(vector) AS SELECT id FROM p1024 ORDER BY v <-> $1 LIMIT 10;
SET plan_cache_mode = force_generic_plan;
SELECT v AS q1 FROM p1024 WHERE id = 1 \gset
EXPLAIN (COSTS OFF) EXECUTE q1024(:'q1');
RESET plan_cache_mode;
-- Without a LIMIT: every row, a sort is cheaper than the index.
EXPLAIN (COSTS OFF) SELECT id FROM p1024 ORDER BY v <-> (SELECT v FROM p1024 WHERE id = 1);

CREATE TABLE p784 (id int, v vector(784));
CREATE INDEX p784_v ON p784 USING omen (v) WITH (buffer_threshold = 100000000);
INSERT INTO p784 SELECT i, random_vector(784) FROM generate_series(1, 20000) i;
ANALYZE p784;
EXPLAIN (COSTS OFF) SELECT id FROM p784 ORDER BY v <-> (SELECT v FROM p784 WHERE id = 1) LIMIT 10;
EXPLAIN (COSTS OFF) SELECT id FROM p784 ORDER BY v <-> (SELECT v FROM p784 WHERE id = 1) LIMIT 100;

CREATE TABLE p64 (id int, v vector(64));
CREATE INDEX p64_v ON p64 USING omen (v vector_cosine_ops) WITH (buffer_threshold = 100000000);
INSERT INTO p64 SELECT i, random_vector(64) FROM generate_series(1, 50000) i;
ANALYZE p64;
EXPLAIN (COSTS OFF) SELECT id FROM p64 ORDER BY v <=> (SELECT v FROM p64 WHERE id = 1) LIMIT 10;
-- A tiny table: the sequential scan is cheaper.
CREATE TABLE ptiny (id int, v vector(64));
CREATE INDEX ptiny_v ON ptiny USING omen (v) WITH (buffer_threshold = 100000000);
INSERT INTO ptiny SELECT i, random_vector(64) FROM generate_series(1, 100) i;
ANALYZE ptiny;
EXPLAIN (COSTS OFF) SELECT id FROM ptiny ORDER BY v <-> (SELECT v FROM ptiny WHERE id = 1) LIMIT 10;
DROP TABLE p1024, p784, p64, ptiny;
DROP FUNCTION random_vector(int);
