-- mod_notary record store, schema version 2: the writer's direct path.
-- Applied after 0001_schema.sql (sql/apply.sh does it in order); re-runnable.
--
-- Version 1 let the writer in only through the view's INSTEAD OF trigger.
-- That path stays, for any other writer, but per row it runs PL/pgSQL, two
-- key upserts and two foreign-key checks: on a shared two-core machine it
-- cost about as much as relaying the request itself. mod_notary now writes
-- the tables directly, still INSERT only:
--
--   * notary.keys: a key is registered once per database connection,
--     INSERT ... ON CONFLICT DO NOTHING, in the transaction of the first
--     record that names it (before a COPY, in a transaction of its own);
--   * notary.records: the row, by key digest; `id` and `stored_at` stay
--     the database's (the writer holds no privilege on those columns);
--   * notary.record_committed(): asked only when an INSERT hits the unique
--     (exchange_id, direction), i.e. when a retry after a lost answer finds
--     its own row already committed. True only for the identical message.
--
-- Unchanged guarantees: rows are append-only (triggers from version 1),
-- body_sha256 and key digests are re-checked by CHECK constraints, one
-- request and one response per exchange. The foreign keys from records to
-- keys go (the writer registers the key in the same transaction, and keys
-- are never deleted); the view joins keys with LEFT JOIN, so a record could
-- never be hidden by a missing key row, it would show NULL keys instead.

SET LOCAL client_min_messages = warning;
DO $lock$ BEGIN PERFORM pg_advisory_xact_lock(hashtext('mod_notary schema')); END $lock$;

ALTER TABLE notary.records
    DROP CONSTRAINT IF EXISTS records_sender_key_sha256_fkey,
    DROP CONSTRAINT IF EXISTS records_receiver_key_sha256_fkey;

-- Bodies and header blocks compress with lz4 where the server has it
-- (PostgreSQL 14+, built with lz4): several times cheaper than pglz.
DO $lz4$
BEGIN
    IF current_setting('server_version_num')::int >= 140000 THEN
        BEGIN
            EXECUTE 'ALTER TABLE notary.records ALTER COLUMN body SET COMPRESSION lz4, '
                    'ALTER COLUMN headers SET COMPRESSION lz4';
        EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
            RAISE NOTICE 'mod_notary: lz4 not available, bodies keep pglz compression';
        END;
    END IF;
END
$lz4$;

-- Same columns, keys by LEFT JOIN (see above).
DO $view$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM notary.schema_version WHERE version >= 3) THEN
        EXECUTE $v$
CREATE OR REPLACE VIEW public.notary_records AS
SELECT r.id,
       r.recorded_at,
       r.direction,
       r.merchant,
       sk.der AS sender_key,
       rk.der AS receiver_key,
       r.sender_key_sha256,
       r.receiver_key_sha256,
       r.rule,
       r.method,
       r.uri,
       r.status,
       r.content_type,
       r.headers,
       r.body,
       r.body_sha256,
       r.exchange_id
  FROM notary.records r
  LEFT JOIN notary.keys sk ON sk.sha256 = r.sender_key_sha256
  LEFT JOIN notary.keys rk ON rk.sha256 = r.receiver_key_sha256
        $v$;
    END IF;
END
$view$;

-- Is the committed row of (exchange_id, direction) exactly this message?
-- Same fields as the writer's INSERT, without the body (its digest stands
-- for it, and the CHECK constraint ties the two).
CREATE OR REPLACE FUNCTION notary.record_committed(
    p_recorded_at timestamptz, p_direction text, p_merchant text,
    p_sender_key_sha256 bytea, p_receiver_key_sha256 bytea, p_rule text,
    p_method text, p_uri text, p_status integer, p_content_type text,
    p_headers bytea, p_body_sha256 bytea, p_exchange_id text)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT EXISTS (
        SELECT 1 FROM notary.records r
         WHERE r.exchange_id = p_exchange_id AND r.direction = p_direction
           AND ROW(r.recorded_at, r.merchant, r.sender_key_sha256,
                   r.receiver_key_sha256, r.rule, r.method, r.uri, r.status,
                   r.content_type, r.headers, r.body_sha256)
               IS NOT DISTINCT FROM
               ROW(p_recorded_at, p_merchant, p_sender_key_sha256,
                   p_receiver_key_sha256, p_rule, p_method, p_uri, p_status,
                   p_content_type, p_headers, p_body_sha256))
$fn$;
ALTER FUNCTION notary.record_committed(timestamptz, text, text, bytea, bytea, text, text,
                                       text, integer, text, bytea, bytea, text)
    OWNER TO notary_owner;
REVOKE ALL ON FUNCTION notary.record_committed(timestamptz, text, text, bytea, bytea, text,
                                               text, text, integer, text, bytea, bytea, text)
    FROM PUBLIC;

-- The writer: INSERT on the columns it fills, EXECUTE on the check above.
GRANT USAGE ON SCHEMA notary TO notary_writer;
GRANT INSERT (sha256, der) ON notary.keys TO notary_writer;
GRANT INSERT (recorded_at, direction, merchant, sender_key_sha256, receiver_key_sha256,
              rule, method, uri, status, content_type, headers, body, body_sha256,
              exchange_id)
    ON notary.records TO notary_writer;
GRANT EXECUTE ON FUNCTION notary.record_committed(timestamptz, text, text, bytea, bytea, text,
                                                  text, text, integer, text, bytea, bytea,
                                                  text)
    TO notary_writer;

INSERT INTO notary.schema_version (version, description)
VALUES (2, 'writer inserts into notary.keys/notary.records directly; no foreign keys; lz4')
ON CONFLICT (version) DO NOTHING;
