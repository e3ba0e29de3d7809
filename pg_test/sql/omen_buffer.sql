-- The insert buffer: inserts append to it, scans read it, merges (omen_flush, VACUUM, the
-- background worker) move it into the graph; buffer = off inserts in place.
SET enable_seqscan = off;
CREATE TABLE items (id int PRIMARY KEY, v vector(3)) WITH (autovacuum_enabled = off);
INSERT INTO items SELECT i, ARRAY[sin(i), cos(i), sin(i * 0.1)]::real[]::vector FROM generate_series(1, 1000) i;
-- A threshold no test reaches: no background merge runs unless asked for.
CREATE INDEX items_v ON items USING omen (v) WITH (buffer_threshold = 100000000);

-- Option errors.
CREATE INDEX bad ON items USING omen (v) WITH (buffer_threshold = 0);
CREATE INDEX bad ON items USING omen (v) WITH (buffer = maybe);
ALTER INDEX items_v SET (buffer_threshold = -5);

SELECT nodes, buffered_entries, buffer_pages, merges_done, last_merge_at IS NULL AS never_merged
FROM omen_index_info('items_v');

-- Read your writes: rows are returned by the very next query, before any merge.
INSERT INTO items SELECT i, ARRAY[sin(i), cos(i), sin(i * 0.1)]::real[]::vector FROM generate_series(1001, 1500) i;
INSERT INTO items VALUES (5000, '[7,7,7]');
SELECT nodes, buffered_entries, buffer_pages FROM omen_index_info('items_v');
EXPLAIN (costs off) SELECT id FROM items ORDER BY v <-> '[7,7,7]' LIMIT 1;
SELECT id FROM items ORDER BY v <-> '[7,7,7]' LIMIT 1;
-- Graph and buffer rows interleave in exact distance order.
SELECT array_agg(id) = exact_ids('[0.2,0.9,0.4]', 10) AS exact_mixed
FROM (SELECT id FROM items ORDER BY v <-> '[0.2,0.9,0.4]' LIMIT 10) s;
SELECT count(*) AS all_rows FROM (SELECT id FROM items ORDER BY v <-> '[0,0,0]' LIMIT 5000) s;
SELECT ok, nodes, buffered, table_rows, problems FROM omen_check('items_v');

-- An aborted insert is invisible, and VACUUM drops its entry.
BEGIN;
INSERT INTO items VALUES (6000, '[-8,-8,-8]');
SELECT id FROM items ORDER BY v <-> '[-8,-8,-8]' LIMIT 1;
ROLLBACK;
SELECT id FROM items ORDER BY v <-> '[-8,-8,-8]' LIMIT 1;
SELECT buffered_entries FROM omen_index_info('items_v');

-- Updated and deleted buffered rows.
UPDATE items SET v = '[-7,-7,-7]' WHERE id = 1200;
DELETE FROM items WHERE id BETWEEN 1300 AND 1349;
SELECT id FROM items ORDER BY v <-> '[-7,-7,-7]' LIMIT 1;
SELECT count(*) AS deleted_rows_found FROM (SELECT id FROM items ORDER BY v <-> '[0,0,0]' LIMIT 5000) s
WHERE id BETWEEN 1300 AND 1349;

-- VACUUM drops dead entries and merges the rest into the graph.
VACUUM items;
SELECT nodes, buffered_entries, buffer_pages, merges_done >= 1 AS merged, merged_entries,
       last_merge_at IS NOT NULL AS has_merge_time, last_merge_ms >= 0 AS has_duration
FROM omen_index_info('items_v');
SELECT ok, nodes, buffered, table_rows, problems FROM omen_check('items_v');
SELECT id FROM items ORDER BY v <-> '[-7,-7,-7]' LIMIT 1;
SELECT array_agg(id) = exact_ids('[0.2,0.9,0.4]', 10) AS exact_after_merge
FROM (SELECT id FROM items ORDER BY v <-> '[0.2,0.9,0.4]' LIMIT 10) s;

-- omen_flush merges now and returns the entries merged.
INSERT INTO items SELECT i, ARRAY[cos(i), sin(i), 0.3]::real[]::vector FROM generate_series(7001, 7300) i;
SELECT buffered_entries FROM omen_index_info('items_v');
SELECT omen_flush('items_v');
SELECT nodes, buffered_entries, buffer_pages FROM omen_index_info('items_v');
SELECT omen_flush('items_v') AS nothing_left;
SELECT ok, nodes, buffered, table_rows, problems FROM omen_check('items_v');
SELECT array_agg(id) = exact_ids('[0.6,-0.7,0.3]', 10) AS exact_after_flush
FROM (SELECT id FROM items ORDER BY v <-> '[0.6,-0.7,0.3]' LIMIT 10) s;
-- The emptied buffer pages are reused: the index does not grow for the next batch.
SELECT pg_relation_size('items_v') AS size_before \gset
INSERT INTO items SELECT i, ARRAY[cos(i), sin(i), 0.4]::real[]::vector FROM generate_series(7301, 7600) i;
SELECT pg_relation_size('items_v') - :size_before AS grown_bytes, buffer_pages FROM omen_index_info('items_v');
SELECT omen_flush('items_v');

-- buffer = off: inserts go into the graph in place.
ALTER INDEX items_v SET (buffer = off);
INSERT INTO items VALUES (8000, '[6,-6,6]');
SELECT nodes, buffered_entries FROM omen_index_info('items_v');
SELECT id FROM items ORDER BY v <-> '[6,-6,6]' LIMIT 1;
ALTER INDEX items_v RESET (buffer);

-- The background worker: a low threshold starts it; it empties the buffer by itself (and
-- puts its pages on the free list).
ALTER INDEX items_v SET (buffer_threshold = 10);
SELECT merged_entries AS merged_before FROM omen_index_info('items_v') \gset
INSERT INTO items SELECT i, ARRAY[sin(i), 0.5, cos(i)]::real[]::vector FROM generate_series(9001, 9600) i;
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN (SELECT buffer_pages FROM omen_index_info('items_v')) = 0;
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT buffered_entries, merged_entries - :merged_before AS merged_by_worker FROM omen_index_info('items_v');
SELECT ok, buffered, problems FROM omen_check('items_v');
SELECT array_agg(id) = exact_ids('[0.1,0.5,0.9]', 10) AS exact_after_worker
FROM (SELECT id FROM items ORDER BY v <-> '[0.1,0.5,0.9]' LIMIT 10) s;

-- An index built empty buffers its first rows, and the first merge gives it an entry point.
CREATE TABLE fresh (id int, v vector(2));
CREATE INDEX fresh_v ON fresh USING omen (v) WITH (buffer_threshold = 100000000);
INSERT INTO fresh SELECT i, ARRAY[i, i]::real[]::vector FROM generate_series(1, 20) i;
SELECT id FROM fresh ORDER BY v <-> '[3.2,3.2]' LIMIT 3;
SELECT nodes, buffered_entries, entry_point IS NULL AS no_entry FROM omen_index_info('fresh_v');
SELECT omen_flush('fresh_v');
SELECT nodes, buffered_entries, entry_point IS NULL AS no_entry FROM omen_index_info('fresh_v');
SELECT id FROM fresh ORDER BY v <-> '[3.2,3.2]' LIMIT 3;
SELECT ok, nodes, table_rows, problems FROM omen_check('fresh_v');

-- omen_flush refuses other relations and read-only transactions.
SELECT omen_flush('items_pkey');
BEGIN READ ONLY;
SELECT omen_flush('fresh_v');
ROLLBACK;

DROP TABLE items, fresh;
