-- VACUUM repairs the graph in place: deleted rows never come back, slots are reused.
SET enable_seqscan = off;
CREATE TABLE items (id int PRIMARY KEY, v vector(4)) WITH (autovacuum_enabled = off);
INSERT INTO items SELECT i, ARRAY[sin(i), cos(i), sin(i * 0.3), cos(i * 0.7)]::real[]::vector
FROM generate_series(1, 1000) i;
CREATE INDEX items_v ON items USING omen (v);

-- VACUUM with nothing deleted writes nothing.
VACUUM items;
SELECT nodes, deleted_nodes, free_slots FROM omen_index_info('items_v');

-- DELETE + VACUUM: gone before and after VACUUM; the graph is repaired.
DELETE FROM items WHERE id % 10 = 0;
SELECT count(*) AS deleted_rows_returned FROM (SELECT id FROM items ORDER BY v <-> '[0,0,0,0]' LIMIT 1000) s WHERE id % 10 = 0;
VACUUM items;
SELECT count(*) AS deleted_rows_returned FROM (SELECT id FROM items ORDER BY v <-> '[0,0,0,0]' LIMIT 1000) s WHERE id % 10 = 0;
SELECT nodes, deleted_nodes, free_slots FROM omen_index_info('items_v');
SELECT ok, nodes, table_rows, problems FROM omen_check('items_v');
SELECT array_agg(id) = exact_ids('[0.5,0.5,0,0]', 10) AS exact_after_vacuum
FROM (SELECT id FROM items ORDER BY v <-> '[0.5,0.5,0,0]' LIMIT 10) s;

-- Inserts in place reuse the freed slots: the index does not grow.
ALTER INDEX items_v SET (buffer = off);
SELECT pg_relation_size('items_v') AS size_before \gset
INSERT INTO items SELECT i, ARRAY[cos(i), sin(i), 0.1, 0.2]::real[]::vector FROM generate_series(2001, 2100) i;
SELECT pg_relation_size('items_v') = :size_before AS same_size, free_slots FROM omen_index_info('items_v');
ALTER INDEX items_v RESET (buffer);
SELECT ok, nodes, table_rows FROM omen_check('items_v');

-- UPDATE of the vector column: the old version goes at VACUUM, the new one is found.
UPDATE items SET v = '[5,5,5,5]' WHERE id = 7;
SELECT id FROM items ORDER BY v <-> '[5,5,5,5]' LIMIT 1;
VACUUM items;
SELECT id FROM items ORDER BY v <-> '[5,5,5,5]' LIMIT 1;
SELECT ok, nodes, table_rows FROM omen_check('items_v');

-- Deleting the entry point's row: a new entry point is chosen.
SELECT entry_point AS old_entry FROM omen_index_info('items_v') \gset
DELETE FROM items WHERE ctid = (SELECT entry_tid FROM omen_index_info('items_v'));
VACUUM items;
SELECT entry_point <> :old_entry AS new_entry, entry_tid IS NOT NULL AS entry_has_row FROM omen_index_info('items_v');
SELECT ok, nodes, table_rows, problems FROM omen_check('items_v');
DELETE FROM items WHERE id % 2 = 1;
VACUUM items;
SELECT ok, nodes, table_rows, problems FROM omen_check('items_v');
SELECT array_agg(id) = exact_ids('[0,1,0,1]', 10) AS exact_after_half_deleted
FROM (SELECT id FROM items ORDER BY v <-> '[0,1,0,1]' LIMIT 10) s;

-- VACUUM FULL rebuilds the index.
VACUUM FULL items;
SELECT deleted_nodes, free_slots FROM omen_index_info('items_v');
SELECT ok, table_rows > 0 AS has_rows FROM omen_check('items_v');

-- Deleting everything, then inserting again.
DELETE FROM items;
VACUUM items;
SELECT nodes, entry_point FROM omen_index_info('items_v');
SELECT count(*) FROM (SELECT id FROM items ORDER BY v <-> '[0,0,0,0]' LIMIT 5) s;
INSERT INTO items VALUES (1, '[1,1,1,1]'), (2, '[2,2,2,2]');
SELECT id FROM items ORDER BY v <-> '[0,0,0,0]' LIMIT 5;
SELECT ok, nodes, buffered, table_rows FROM omen_check('items_v');

DROP TABLE items;
