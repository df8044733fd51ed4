-- mod_notary record store, schema version 1.
-- Needs sql/roles.sql first; run as a superuser (sql/apply.sh does both, in
-- order, each file in one transaction). Re-runnable: a second run changes
-- nothing (IF NOT EXISTS, CREATE OR REPLACE with the same text, guarded DO
-- blocks, GRANT/ALTER OWNER that are no-ops when already in place).
--
-- Layout
--   notary.keys          one row per distinct public key: DER SPKI + SHA-256
--   notary.records       one row per recorded message, keys by SHA-256
--   public.notary_records  the stable interface (DESIGN.md "The record store")
--   notary.record_insert() INSTEAD OF INSERT on the view, SECURITY DEFINER
--                        owned by notary_owner: the only way in for the writer
--   notary.refuse_change() append-only guard on both tables
--   notary.body_preview()  readable excerpt of a body, for reports
--   notary.report_rows   what the reports print (hex digests, previews)
--   notary.schema_version  which numbered files have been applied

SET LOCAL client_min_messages = warning;
DO $lock$ BEGIN PERFORM pg_advisory_xact_lock(hashtext('mod_notary schema')); END $lock$;

CREATE SCHEMA IF NOT EXISTS notary AUTHORIZATION notary_owner;
REVOKE ALL ON SCHEMA notary FROM PUBLIC;

CREATE TABLE IF NOT EXISTS notary.schema_version (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Keys are stored once: a busy consumer or merchant would otherwise repeat
-- the same few hundred bytes of SPKI in every row.
CREATE TABLE IF NOT EXISTS notary.keys (
    sha256     bytea PRIMARY KEY,
    der        bytea NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT keys_der_not_empty CHECK (octet_length(der) > 0),
    CONSTRAINT keys_sha256_of_der CHECK (octet_length(sha256) = 32
                                         AND sha256 = pg_catalog.sha256(der))
);

CREATE TABLE IF NOT EXISTS notary.records (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recorded_at         timestamptz NOT NULL,
    direction           text NOT NULL,
    merchant            text NOT NULL,
    sender_key_sha256   bytea NOT NULL REFERENCES notary.keys (sha256),
    receiver_key_sha256 bytea NOT NULL REFERENCES notary.keys (sha256),
    rule                text NOT NULL,
    method              text NOT NULL,
    uri                 text NOT NULL,
    status              integer,
    content_type        text,
    headers             bytea NOT NULL,
    body                bytea NOT NULL,
    body_sha256         bytea NOT NULL,
    exchange_id         text NOT NULL,
    -- when the database took the row (recorded_at is when it was relayed)
    stored_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT records_direction CHECK (direction IN ('request', 'response')),
    CONSTRAINT records_status CHECK (
        (direction = 'request' AND status IS NULL)
        OR (direction = 'response' AND status IS NOT NULL
            AND status BETWEEN 100 AND 999)),
    CONSTRAINT records_body_sha256 CHECK (octet_length(body_sha256) = 32
                                          AND body_sha256 = pg_catalog.sha256(body)),
    CONSTRAINT records_exchange_id_not_empty CHECK (exchange_id <> ''),
    -- One request and one response per exchange. Also what makes the
    -- writer's retry after a lost connection safe (see record_insert).
    CONSTRAINT records_exchange_direction UNIQUE (exchange_id, direction)
);

CREATE INDEX IF NOT EXISTS records_sender_idx   ON notary.records (sender_key_sha256, recorded_at);
CREATE INDEX IF NOT EXISTS records_receiver_idx ON notary.records (receiver_key_sha256, recorded_at);
CREATE INDEX IF NOT EXISTS records_merchant_idx ON notary.records (merchant, recorded_at);
CREATE INDEX IF NOT EXISTS records_time_idx     ON notary.records (recorded_at);

ALTER TABLE notary.schema_version OWNER TO notary_owner;
ALTER TABLE notary.keys OWNER TO notary_owner;
ALTER TABLE notary.records OWNER TO notary_owner;
REVOKE ALL ON notary.schema_version, notary.keys, notary.records FROM PUBLIC;

-- Append-only, also against the owner: a mistaken UPDATE/DELETE/TRUNCATE
-- raises instead of silently rewriting evidence. (A superuser can still
-- disable triggers or drop tables; that is outside any schema's reach.)
CREATE OR REPLACE FUNCTION notary.refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RAISE EXCEPTION '% on %.% refused: notary records are append-only',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$fn$;
ALTER FUNCTION notary.refuse_change() OWNER TO notary_owner;

DO $trg$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['keys', 'records'] LOOP
        -- version 3 guards records with records_guard instead
        IF NOT EXISTS (SELECT 1 FROM pg_trigger
                       WHERE tgrelid = format('notary.%I', t)::regclass
                         AND tgname IN (t || '_append_only', t || '_guard')) THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON notary.%I '
                           'FOR EACH ROW EXECUTE FUNCTION notary.refuse_change()',
                           t || '_append_only', t);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_trigger
                       WHERE tgrelid = format('notary.%I', t)::regclass
                         AND tgname = t || '_no_truncate') THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON notary.%I '
                           'FOR EACH STATEMENT EXECUTE FUNCTION notary.refuse_change()',
                           t || '_no_truncate', t);
        END IF;
    END LOOP;
END
$trg$;

-- The stable interface. Column list and types are part of the contract.
-- (Later versions add columns at the end; a re-run of this file leaves
-- their view alone, since a view cannot lose columns.)
DO $view$
BEGIN
    IF to_regclass('public.notary_records') IS NULL
       OR NOT EXISTS (SELECT 1 FROM notary.schema_version WHERE version >= 2) THEN
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
  JOIN notary.keys sk ON sk.sha256 = r.sender_key_sha256
  JOIN notary.keys rk ON rk.sha256 = r.receiver_key_sha256
        $v$;
    END IF;
END
$view$;
ALTER VIEW public.notary_records OWNER TO notary_owner;
COMMENT ON VIEW public.notary_records IS
    'mod_notary: one row per recorded message (append-only). INSERT is the writer''s only path in.';

-- The writer's one-statement insert path: INSERT INTO notary_records (...)
-- VALUES (...). Runs as notary_owner so the writer needs INSERT on the view
-- and nothing else (no SELECT, no access to schema notary).
--
-- The key digests may be given (then they must match) or left NULL (then
-- computed here). An identical second insert of the same (exchange_id,
-- direction) is accepted without a second row (INSERT 0 0): that is what
-- makes the writer's retry after a connection lost mid-statement safe. A
-- different message under the same (exchange_id, direction) is refused.
CREATE OR REPLACE FUNCTION notary.record_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    s_fp   bytea;
    r_fp   bytea;
    new_id bigint;
    old    notary.records%ROWTYPE;
BEGIN
    IF NEW.sender_key IS NULL OR NEW.receiver_key IS NULL THEN
        RAISE EXCEPTION 'notary_records: sender_key and receiver_key are required'
            USING ERRCODE = 'not_null_violation';
    END IF;
    s_fp := sha256(NEW.sender_key);
    r_fp := sha256(NEW.receiver_key);
    IF NEW.sender_key_sha256 IS DISTINCT FROM s_fp AND NEW.sender_key_sha256 IS NOT NULL THEN
        RAISE EXCEPTION 'notary_records: sender_key_sha256 % is not the SHA-256 of sender_key (%)',
            encode(NEW.sender_key_sha256, 'hex'), encode(s_fp, 'hex')
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.receiver_key_sha256 IS DISTINCT FROM r_fp AND NEW.receiver_key_sha256 IS NOT NULL THEN
        RAISE EXCEPTION 'notary_records: receiver_key_sha256 % is not the SHA-256 of receiver_key (%)',
            encode(NEW.receiver_key_sha256, 'hex'), encode(r_fp, 'hex')
            USING ERRCODE = 'check_violation';
    END IF;

    INSERT INTO notary.keys (sha256, der) VALUES (s_fp, NEW.sender_key)
        ON CONFLICT (sha256) DO NOTHING;
    INSERT INTO notary.keys (sha256, der) VALUES (r_fp, NEW.receiver_key)
        ON CONFLICT (sha256) DO NOTHING;

    INSERT INTO notary.records (recorded_at, direction, merchant,
                                sender_key_sha256, receiver_key_sha256,
                                rule, method, uri, status, content_type,
                                headers, body, body_sha256, exchange_id)
    VALUES (NEW.recorded_at, NEW.direction, NEW.merchant, s_fp, r_fp,
            NEW.rule, NEW.method, NEW.uri, NEW.status, NEW.content_type,
            NEW.headers, NEW.body, NEW.body_sha256, NEW.exchange_id)
    ON CONFLICT (exchange_id, direction) DO NOTHING
    RETURNING id INTO new_id;

    IF new_id IS NULL THEN
        SELECT * INTO old FROM notary.records
         WHERE exchange_id = NEW.exchange_id AND direction = NEW.direction;
        IF ROW(old.recorded_at, old.merchant, old.sender_key_sha256,
               old.receiver_key_sha256, old.rule, old.method, old.uri,
               old.status, old.content_type, old.headers, old.body_sha256)
           IS NOT DISTINCT FROM
           ROW(NEW.recorded_at, NEW.merchant, s_fp, r_fp, NEW.rule,
               NEW.method, NEW.uri, NEW.status, NEW.content_type,
               NEW.headers, NEW.body_sha256) THEN
            RETURN NULL;    -- the same message, already committed: no second row
        END IF;
        RAISE EXCEPTION 'notary_records: exchange % already has a different % record (id %)',
            NEW.exchange_id, NEW.direction, old.id
            USING ERRCODE = 'unique_violation';
    END IF;

    NEW.id := new_id;
    NEW.sender_key_sha256 := s_fp;
    NEW.receiver_key_sha256 := r_fp;
    RETURN NEW;
END
$fn$;
ALTER FUNCTION notary.record_insert() OWNER TO notary_owner;
REVOKE ALL ON FUNCTION notary.record_insert() FROM PUBLIC;

DO $trg$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'public.notary_records'::regclass
                     AND tgname = 'notary_records_insert') THEN
        CREATE TRIGGER notary_records_insert INSTEAD OF INSERT ON public.notary_records
            FOR EACH ROW EXECUTE FUNCTION notary.record_insert();
    END IF;
END
$trg$;

-- A readable excerpt: the first n bytes as text when they are UTF-8 (control
-- characters other than LF and TAB shown as spaces), otherwise a hex excerpt
-- marked as binary.
CREATE OR REPLACE FUNCTION notary.body_preview(b bytea, n integer DEFAULT 120) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    len  integer := least(octet_length(b), n);
    more text := CASE WHEN octet_length(b) > n THEN '...' ELSE '' END;
    t    text;
BEGIN
    -- trim up to 3 bytes: the cut may fall inside a multibyte character
    FOR cut IN 0..3 LOOP
        EXIT WHEN len - cut < 0;
        BEGIN
            t := convert_from(substring(b FROM 1 FOR len - cut), 'UTF8');
            RETURN regexp_replace(t, '[\x01-\x08\x0b-\x1f\x7f]', ' ', 'g') || more;
        EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
            NULL;
        END;
    END LOOP;
    RETURN '(binary) ' || encode(substring(b FROM 1 FOR 32), 'hex')
           || CASE WHEN octet_length(b) > 32 THEN '...' ELSE '' END;
END
$fn$;
ALTER FUNCTION notary.body_preview(bytea, integer) OWNER TO notary_owner;
REVOKE ALL ON FUNCTION notary.body_preview(bytea, integer) FROM PUBLIC;

-- What the reports print, one place for all of them: digests in hex, body
-- length and previews. Reports filter notary_records (indexed) and show
-- these rows; compliance staff may query it ad hoc as well.
DO $view$
BEGIN
    IF to_regclass('notary.report_rows') IS NULL
       OR NOT EXISTS (SELECT 1 FROM notary.schema_version WHERE version >= 3) THEN
        EXECUTE $v$
CREATE OR REPLACE VIEW notary.report_rows AS
SELECT r.id,
       r.recorded_at,
       r.direction,
       r.merchant,
       encode(r.sender_key_sha256, 'hex')   AS sender_key_sha256,
       encode(r.receiver_key_sha256, 'hex') AS receiver_key_sha256,
       r.rule,
       r.method,
       r.uri,
       r.status,
       r.content_type,
       notary.body_preview(r.headers, 4000) AS headers,
       octet_length(r.body)                 AS body_bytes,
       encode(r.body_sha256, 'hex')         AS body_sha256,
       r.exchange_id,
       notary.body_preview(r.body)          AS body_preview
  FROM notary.records r
        $v$;
    END IF;
END
$view$;
ALTER VIEW notary.report_rows OWNER TO notary_owner;
REVOKE ALL ON notary.report_rows FROM PUBLIC;

-- Privileges: the writer adds, the reader reads; nobody else gets anything.
REVOKE ALL ON public.notary_records FROM PUBLIC;
GRANT INSERT ON public.notary_records TO notary_writer;
GRANT SELECT ON public.notary_records TO notary_reader;
GRANT USAGE ON SCHEMA notary TO notary_reader;   -- report_rows, body_preview
GRANT SELECT ON notary.report_rows TO notary_reader;
GRANT EXECUTE ON FUNCTION notary.body_preview(bytea, integer) TO notary_reader;

INSERT INTO notary.schema_version (version, description)
VALUES (1, 'keys, records, view notary_records, append-only guards, writer/reader grants')
ON CONFLICT (version) DO NOTHING;
