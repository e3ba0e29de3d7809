-- Runs first (scripts/regress.sh); the other files share this database and these helpers.
-- exact_ids(q, k, op): the ids of the k rows of `items` nearest to q by operator op (a
-- sequential scan sorting every row, ties by id): the exact answer index scans are held to.
CREATE FUNCTION exact_ids(q text, k int, op text DEFAULT '<->') RETURNS int[] LANGUAGE plpgsql AS $$
DECLARE r int[];
BEGIN
    SET LOCAL enable_indexscan = off;
    SET LOCAL enable_seqscan = on;
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v %s %L::vector, id LIMIT %s) s', op, q, k) INTO r;
    RETURN r;
END $$;
