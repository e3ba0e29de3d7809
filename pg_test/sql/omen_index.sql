-- The omen index: operator classes, options, EXPLAIN, filtered queries, NULLs, empty and
-- unlogged tables, REINDEX, omen_check and omen_index_info.
SET enable_seqscan = off;

CREATE TABLE items (id int PRIMARY KEY, category int, v vector(3));
INSERT INTO items
SELECT i, i % 100, ARRAY[sin(i), cos(i * 1.7), sin(i * 0.37) * 2]::real[]::vector
FROM generate_series(1, 2000) i;
INSERT INTO items VALUES (0, 0, NULL);

-- Every operator class: index order equals the exact order (exact_ids, setup.sql: a sequential scan).
CREATE INDEX items_l2 ON items USING omen (v vector_l2_ops);
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <-> '[0,0,0]' LIMIT 10;
SELECT array_agg(id) = exact_ids('[0.1,0.2,0.3]', 10, '<->') AS l2_exact
FROM (SELECT id FROM items ORDER BY v <-> '[0.1,0.2,0.3]' LIMIT 10) s;
DROP INDEX items_l2;

CREATE INDEX items_ip ON items USING omen (v vector_ip_ops);
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <#> '[1,1,1]' LIMIT 10;
SELECT array_agg(id) = exact_ids('[1,1,1]', 10, '<#>') AS ip_exact
FROM (SELECT id FROM items ORDER BY v <#> '[1,1,1]' LIMIT 10) s;
DROP INDEX items_ip;

CREATE INDEX items_cos ON items USING omen (v vector_cosine_ops);
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <=> '[1,2,3]' LIMIT 10;
SELECT array_agg(id) = exact_ids('[1,2,3]', 10, '<=>') AS cosine_exact
FROM (SELECT id FROM items ORDER BY v <=> '[1,2,3]' LIMIT 10) s;
DROP INDEX items_cos;

CREATE INDEX items_l1 ON items USING omen (v vector_l1_ops);
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <+> '[0,1,0]' LIMIT 10;
SELECT array_agg(id) = exact_ids('[0,1,0]', 10, '<+>') AS l1_exact
FROM (SELECT id FROM items ORDER BY v <+> '[0,1,0]' LIMIT 10) s;
DROP INDEX items_l1;

-- A query whose operator does not match the operator class does not use the index.
CREATE INDEX items_l2 ON items USING omen (v vector_l2_ops) WITH (max_neighbors = 16, build_list_size = 64, alpha = 1.1);
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <=> '[0,0,1]' LIMIT 10;
SELECT dimensions, metric, max_neighbors, build_list_size, alpha, nodes, deleted_nodes,
       average_degree > 1 AS has_edges, entry_point IS NOT NULL AS has_entry
FROM omen_index_info('items_l2');
SELECT ok, nodes, reachable, table_rows, problems FROM omen_check('items_l2');

-- Distances come back in order (one search round: LIMIT <= omen.search_list_size).
SELECT bool_and(d >= lag_d) AS ordered FROM (
    SELECT v <-> '[0.5,0.5,0.5]' AS d, lag(v <-> '[0.5,0.5,0.5]') OVER () AS lag_d
    FROM (SELECT v FROM items ORDER BY v <-> '[0.5,0.5,0.5]' LIMIT 40) s) t
WHERE lag_d IS NOT NULL;
-- Past one round the scan widens its search and keeps returning rows.
SELECT count(*) AS rows_past_one_round, count(DISTINCT id) AS distinct_rows
FROM (SELECT id FROM items ORDER BY v <-> '[0.5,0.5,0.5]' LIMIT 500) s;

-- Filtered queries return all k rows whenever k rows match, down to 1% selectivity.
SELECT count(*) AS rows_1pct FROM (SELECT id FROM items WHERE category = 7 ORDER BY v <-> '[0,0,0]' LIMIT 10) s;
SELECT count(*) AS rows_all_of_them FROM (SELECT id FROM items WHERE category = 7 ORDER BY v <-> '[0,0,0]' LIMIT 100) s;
SELECT count(*) AS no_match FROM (SELECT id FROM items WHERE category = -1 ORDER BY v <-> '[0,0,0]' LIMIT 10) s;

-- Inserts, updates and deletes after the build; the index stays consistent.
INSERT INTO items SELECT i, i % 100, ARRAY[cos(i), sin(i), 0.5]::real[]::vector FROM generate_series(2001, 2300) i;
UPDATE items SET v = '[9,9,9]' WHERE id = 5;
SELECT id FROM items ORDER BY v <-> '[9,9,9]' LIMIT 1;
DELETE FROM items WHERE id BETWEEN 100 AND 199;
SELECT count(*) AS deleted_rows_found FROM (SELECT id FROM items ORDER BY v <-> '[0,0,0]' LIMIT 3000) s WHERE id BETWEEN 100 AND 199;
VACUUM items;
SELECT ok, nodes, table_rows, problems FROM omen_check('items_l2');
SELECT nodes, deleted_nodes, free_slots FROM omen_index_info('items_l2');
REINDEX INDEX items_l2;
SELECT ok, nodes, table_rows FROM omen_check('items_l2');
SELECT array_agg(id) = exact_ids('[0.3,-0.2,1]', 10, '<->') AS exact_after_reindex
FROM (SELECT id FROM items ORDER BY v <-> '[0.3,-0.2,1]' LIMIT 10) s;

-- Options and their errors.
CREATE INDEX ON items USING omen (v) WITH (max_neighbors = 2);
CREATE INDEX ON items USING omen (v) WITH (max_neighbors = 1000);
CREATE INDEX ON items USING omen (v) WITH (build_list_size = 5);
CREATE INDEX ON items USING omen (v) WITH (alpha = 0.5);
CREATE INDEX ON items USING omen (v) WITH (alpha = 3);
CREATE INDEX ON items USING omen (v) WITH (max_neighbors = 64, build_list_size = 32);
CREATE INDEX ON items USING omen (v) WITH (fanout = 3);
CREATE INDEX ON items USING omen (id);
CREATE INDEX ON items USING omen (v, id);
SET omen.search_list_size = 0;
SET omen.search_list_size = 100;
SHOW omen.search_list_size;
RESET omen.search_list_size;

-- A node record (its neighbours' ids and codes) must fit on a page: the limit is on
-- max_neighbors; vectors of any size fit (past a page, their records span pages).
CREATE TABLE too_wide (v vector(2000));
CREATE INDEX ON too_wide USING omen (v) WITH (max_neighbors = 64);
CREATE INDEX ON too_wide USING omen (v);
CREATE TABLE widest (v vector(16000));
CREATE INDEX ON widest USING omen (v);
INSERT INTO widest SELECT array_fill(i::real, ARRAY[16000])::vector FROM generate_series(1, 3) i;
SELECT subvector(v, 1, 2) AS nearest_to_2 FROM widest ORDER BY v <-> array_fill(2.1::real, ARRAY[16000])::vector LIMIT 1;
DROP TABLE too_wide, widest;

-- A query vector of other dimensions is an error.
SELECT id FROM items ORDER BY v <-> '[1,2]' LIMIT 1;

-- Empty tables, NULLs, columns without a typmod.
CREATE TABLE empty (v vector(4));
CREATE INDEX empty_idx ON empty USING omen (v);
SELECT nodes, pages, entry_point FROM omen_index_info('empty_idx');
SELECT * FROM empty ORDER BY v <-> '[1,2,3,4]' LIMIT 1;
INSERT INTO empty VALUES (NULL), ('[1,2,3,4]'), ('[1,1,1,1]');
SELECT v FROM empty ORDER BY v <-> '[1,1,1,1]' LIMIT 5;
SELECT ok, nodes, buffered, table_rows FROM omen_check('empty_idx');

CREATE TABLE untyped (id int, v vector);
CREATE INDEX untyped_idx ON untyped USING omen (v);
INSERT INTO untyped VALUES (1, '[1,2]'), (2, '[2,3]');
INSERT INTO untyped VALUES (3, '[1,2,3]');
SELECT id FROM untyped ORDER BY v <-> '[1.5,2]' LIMIT 2;
DROP INDEX untyped_idx;
INSERT INTO untyped VALUES (4, '[1,2,3]');
CREATE INDEX untyped_idx ON untyped USING omen (v);

-- Cosine skips zero vectors (they have no direction).
CREATE TABLE zeros (id int, v vector(2));
INSERT INTO zeros VALUES (1, '[0,0]'), (2, '[1,0]'), (3, '[0,1]');
CREATE INDEX ON zeros USING omen (v vector_cosine_ops);
SELECT id FROM zeros ORDER BY v <=> '[1,0.1]' LIMIT 3;

-- Unlogged tables (the index gets an init fork).
CREATE UNLOGGED TABLE ul (id int, v vector(2));
INSERT INTO ul SELECT i, ARRAY[i, i * 2]::real[]::vector FROM generate_series(1, 100) i;
CREATE INDEX ul_idx ON ul USING omen (v);
SELECT id FROM ul ORDER BY v <-> '[10,20]' LIMIT 3;
CREATE UNLOGGED TABLE ul_empty (v vector(2));
CREATE INDEX ON ul_empty USING omen (v);
INSERT INTO ul_empty VALUES ('[1,1]');
SELECT v FROM ul_empty ORDER BY v <-> '[0,0]' LIMIT 1;

-- Past maintenance_work_mem the build completes anyway (inserting the rest one by one).
CREATE TABLE wide (id int, v vector(128));
INSERT INTO wide SELECT i, ARRAY(SELECT sin(i * j) FROM generate_series(1, 128) j)::real[]::vector
FROM generate_series(1, 3000) i;
SET maintenance_work_mem = '1MB';
CREATE INDEX wide_idx ON wide USING omen (v);
RESET maintenance_work_mem;
SELECT ok, nodes, table_rows, problems FROM omen_check('wide_idx');
SELECT count(*) AS found_itself FROM wide w
WHERE (SELECT id FROM wide ORDER BY v <-> w.v LIMIT 1) = w.id AND w.id % 100 = 0;
DROP TABLE wide;

-- omen_index_info and omen_check refuse other indexes.
SELECT * FROM omen_index_info('items_pkey');
SELECT * FROM omen_check('items');

-- Without LIMIT the planner prefers a sort over a full index scan.
RESET enable_seqscan;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <-> '[0,0,0]';

DROP TABLE items, empty, untyped, zeros, ul, ul_empty;
