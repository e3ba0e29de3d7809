-- Bad input: every case is an ERROR with a SQLSTATE and a message, never a crash.
-- try() runs a statement and shows its SQLSTATE and message.
CREATE FUNCTION try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
CREATE TABLE t3 (v vector(3));

SELECT q AS statement, try(q) AS result FROM (VALUES
    -- malformed text
    ($$SELECT '1,2,3'::vector$$),
    ($$SELECT '[1,2,3'::vector$$),
    ($$SELECT '1,2,3]'::vector$$),
    ($$SELECT '[1,2,]'::vector$$),
    ($$SELECT '[,1]'::vector$$),
    ($$SELECT '[1,,2]'::vector$$),
    ($$SELECT '[a,b]'::vector$$),
    ($$SELECT '[1 2]'::vector$$),
    ($$SELECT '[]'::vector$$),
    ($$SELECT ''::vector$$),
    ($$SELECT '[1]x'::vector$$),
    -- NaN and infinity, in text, arrays and arithmetic overflow
    ($$SELECT '[NaN]'::vector$$),
    ($$SELECT '[Infinity]'::vector$$),
    ($$SELECT '[-inf]'::vector$$),
    ($$SELECT '[1e39]'::vector$$),
    ($$SELECT ARRAY['NaN'::real]::vector$$),
    ($$SELECT ARRAY['Infinity'::double precision]::vector$$),
    ($$SELECT ARRAY[1e300::double precision]::vector$$),
    ($$SELECT ARRAY['NaN'::numeric]::vector$$),
    ($$SELECT '[3e38]'::vector + '[3e38]'::vector$$),
    ($$SELECT '[3e38]'::vector - '[-3e38]'::vector$$),
    ($$SELECT '[3e38]'::vector * '[10]'::vector$$),
    ($$SELECT '[1e-30]'::vector * '[1e-30]'::vector$$),
    ($$SELECT avg(v) FROM (VALUES ('[3e38]'::vector), ('[3e38]')) t(v)$$),
    ($$SELECT sum(v) FROM (VALUES ('[3e38]'::vector), ('[3e38]')) t(v)$$),
    -- too many dimensions, bad type modifiers
    ($$SELECT array_fill(1::real, ARRAY[16001])::vector$$),
    ($$SELECT ('[' || repeat('1,', 16000) || '1]')::vector$$),
    ($$SELECT NULL::vector(16001)$$),
    ($$SELECT NULL::vector(0)$$),
    ($$SELECT NULL::vector(2, 3)$$),
    -- typmod mismatch on insert and cast
    ($$INSERT INTO t3 VALUES ('[1,2]')$$),
    ($$INSERT INTO t3 VALUES (ARRAY[1,2,3,4])$$),
    ($$SELECT '[1,2]'::vector(3)$$),
    -- operands of different dimensions, for every operator and function
    ($$SELECT '[1,2]'::vector <-> '[1,2,3]'::vector$$),
    ($$SELECT '[1,2]'::vector <#> '[1,2,3]'::vector$$),
    ($$SELECT '[1,2]'::vector <=> '[1,2,3]'::vector$$),
    ($$SELECT '[1,2]'::vector <+> '[1,2,3]'::vector$$),
    ($$SELECT l2_distance('[1,2]', '[1,2,3]')$$),
    ($$SELECT inner_product('[1,2]', '[1,2,3]')$$),
    ($$SELECT cosine_distance('[1,2]', '[1,2,3]')$$),
    ($$SELECT l1_distance('[1,2]', '[1,2,3]')$$),
    ($$SELECT omen_l2_squared_distance('[1,2]', '[1,2,3]')$$),
    ($$SELECT '[1,2]'::vector + '[1,2,3]'::vector$$),
    ($$SELECT '[1,2]'::vector - '[1,2,3]'::vector$$),
    ($$SELECT '[1,2]'::vector * '[1,2,3]'::vector$$),
    ($$SELECT avg(v) FROM (VALUES ('[1,2]'::vector), ('[1,2,3]')) t(v)$$),
    ($$SELECT sum(v) FROM (VALUES ('[1,2]'::vector), ('[1,2,3]')) t(v)$$),
    -- NULL elements and other bad arrays
    ($$SELECT ARRAY[1,NULL,3]::vector$$),
    ($$SELECT ARRAY[1.5,NULL]::real[]::vector$$),
    ($$SELECT ARRAY[1.5,NULL]::numeric[]::vector$$),
    ($$SELECT '{}'::real[]::vector$$),
    ($$SELECT ARRAY[[1,2],[3,4]]::vector$$),
    -- subvector out of range
    ($$SELECT subvector('[1,2,3]', 4, 2)$$),
    ($$SELECT subvector('[1,2,3]', 1, 0)$$),
    -- out-of-range conversions back to arrays
    ($$SELECT '[3e38]'::vector::integer[]$$)
) AS cases(q);

SELECT count(*) AS rows_left_in_t3 FROM t3;
DROP TABLE t3;
DROP FUNCTION try(text);
