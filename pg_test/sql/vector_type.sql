-- The vector type: text I/O, typmod, binary send, storage in tables.

SELECT '[1,2,3]'::vector;
SELECT ' [ 1 , 2.5 ,-3e-2 ] '::vector;
SELECT '[1e30,1.5e-7,123456,-0]'::vector;
SELECT '[3.4028235e38]'::vector;
SELECT '[0.1,0.2,0.3]'::vector::text::vector = '[0.1,0.2,0.3]'::vector AS round_trips;
SELECT '[1,2,3]'::vector(3);
SELECT NULL::vector;

-- typmod
CREATE TABLE items (id int PRIMARY KEY, v vector(3));
INSERT INTO items VALUES (1, '[1,2,3]'), (2, '[4,5,6]'), (3, NULL);
SELECT * FROM items ORDER BY id;
SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'v';
\d items

-- binary form: int16 dims, int16 unused, big-endian floats (pgvector's)
SELECT omen_vector_send('[1,2]'::vector);

-- a vector at the dimension limit round-trips
SELECT vector_dims(array_fill(1.5::real, ARRAY[16000])::vector) AS dims;
SELECT (array_fill(1.5::real, ARRAY[16000])::vector)::text = '[' || array_to_string(array_fill(1.5::real, ARRAY[16000]), ',') || ']' AS same_text;

-- large vectors are stored out of line and read back intact
CREATE TABLE big (v vector(2000));
INSERT INTO big SELECT array_agg(i::real / 7)::vector FROM generate_series(1, 2000) i;
SELECT vector_dims(v), round(vector_norm(v)::numeric, 2) FROM big;

DROP TABLE items, big;
