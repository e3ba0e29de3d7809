-- Operators, functions, arithmetic, comparisons, aggregates, casts.

SELECT '[0,0]'::vector <-> '[3,4]'::vector AS l2;
SELECT '[1,2,3]'::vector <#> '[4,5,6]'::vector AS neg_ip;
SELECT round(('[1,2]'::vector <=> '[2,4]'::vector)::numeric, 6) AS cos_same_direction;
SELECT round(('[1,0]'::vector <=> '[-1,0]'::vector)::numeric, 6) AS cos_opposite;
SELECT '[1,2,3]'::vector <+> '[4,0,3]'::vector AS l1;
SELECT l2_distance('[0,0]', '[3,4]'), inner_product('[1,2,3]', '[4,5,6]'),
       cosine_distance('[1,0]', '[0,1]'), l1_distance('[1,1]', '[-1,-1]');
SELECT cosine_distance('[0,0]', '[1,1]') AS zero_vector_is_nan;
SELECT omen_l2_squared_distance('[0,0]', '[3,4]');
SELECT vector_dims('[1,2,3]'::vector), vector_norm('[3,4]'::vector);
SELECT l2_normalize('[3,4]'::vector), l2_normalize('[0,0]'::vector);
SELECT subvector('[1,2,3,4,5]', 2, 3), subvector('[1,2,3,4,5]', 0, 3), subvector('[1,2,3,4,5]', 4, 10);

-- element-wise arithmetic
SELECT '[1,2,3]'::vector + '[4,5,6]'::vector AS add,
       '[1,2,3]'::vector - '[4,5,6]'::vector AS sub,
       '[1,2,3]'::vector * '[4,5,6]'::vector AS mul;

-- comparisons and the btree opclass
SELECT '[1,2]'::vector = '[1,2]'::vector, '[1,2]'::vector <> '[1,3]'::vector,
       '[1,2]'::vector < '[1,3]'::vector, '[1,2]'::vector < '[1,2,0]'::vector,
       '[2]'::vector > '[1,9]'::vector, '[1,2]'::vector >= '[1,2]'::vector,
       '[1,2]'::vector <= '[0,5]'::vector;
CREATE TABLE cmp (v vector);
INSERT INTO cmp VALUES ('[3,1]'), ('[1,2]'), ('[1,2]'), ('[1,2,0]'), ('[0,9]'), (NULL);
SELECT v FROM cmp ORDER BY v;
SELECT DISTINCT v FROM cmp ORDER BY v;
CREATE UNIQUE INDEX cmp_unique ON cmp (v);
DELETE FROM cmp WHERE ctid IN (SELECT ctid FROM cmp WHERE v = '[1,2]' LIMIT 1);
CREATE UNIQUE INDEX cmp_unique ON cmp (v);
INSERT INTO cmp VALUES ('[3,1]');
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM cmp WHERE v = '[0,9]';
SELECT * FROM cmp WHERE v = '[0,9]';
RESET enable_seqscan;
DROP TABLE cmp;

-- aggregates, also in parallel
SELECT avg(v), sum(v) FROM (VALUES ('[1,2,3]'::vector), ('[3,4,5]'), (NULL)) t(v);
SELECT avg(v), sum(v) FROM (SELECT '[1]'::vector AS v WHERE false) t;
CREATE TABLE agg AS SELECT ARRAY[i, i * 2]::real[]::vector AS v FROM generate_series(1, 2000) i;
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
EXPLAIN (COSTS OFF) SELECT avg(v), sum(v) FROM agg;
SELECT avg(v), sum(v) FROM agg;
RESET max_parallel_workers_per_gather;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
DROP TABLE agg;

-- casts to and from arrays
SELECT ARRAY[1,2,3]::vector, ARRAY[1.5,2.5]::real[]::vector,
       ARRAY[1.25,2]::double precision[]::vector, ARRAY[1.5,2]::numeric[]::vector;
SELECT '[1.5,2,3]'::vector::real[], '[1.5,2,3]'::vector::double precision[],
       '[1.5,2,3]'::vector::numeric[], '[1.4,2.6,3]'::vector::integer[];
SELECT ARRAY[1,2,3]::vector(3);
CREATE TABLE assign (v vector(2));
INSERT INTO assign VALUES (ARRAY[1,2]), (ARRAY[1.5,2.5]::real[]);
SELECT * FROM assign;
DROP TABLE assign;
