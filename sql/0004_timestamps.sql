-- mod_notary record store, schema version 4: RFC 3161 time-stamps of the
-- log's checkpoints (NotaryLogTimestamp). Applied after 0003; re-runnable.
--
--   notary.log_timestamps  one TimeStampToken (DER) per stamped checkpoint,
--                          over SHA-256 of the checkpoint's signed note as
--                          stored in notary.log_checkpoints; append-only.
--
-- A checkpoint signed by the notary says what the tree was; a TSA's token
-- over it says the tree was so no later than the TSA's time, which the
-- notary's own clock cannot. Receipts made against a stamped checkpoint
-- carry its token (docs/evidence.md); notary-verify checks it with the
-- TSA's CA.
CREATE TABLE IF NOT EXISTS notary.log_timestamps (
    size       bigint PRIMARY KEY REFERENCES notary.log_checkpoints (size),
    token      bytea NOT NULL,
    tsa        text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT log_timestamps_token CHECK (octet_length(token) BETWEEN 1 AND 262144)
);
ALTER TABLE notary.log_timestamps ALTER COLUMN token SET STORAGE EXTERNAL; -- DER does not compress
ALTER TABLE notary.log_timestamps OWNER TO notary_owner;
REVOKE ALL ON notary.log_timestamps FROM PUBLIC;

DO $trg$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'notary.log_timestamps'::regclass
                   AND tgname = 'log_timestamps_append_only') THEN
        CREATE TRIGGER log_timestamps_append_only BEFORE UPDATE OR DELETE ON notary.log_timestamps
            FOR EACH ROW EXECUTE FUNCTION notary.refuse_change();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'notary.log_timestamps'::regclass
                   AND tgname = 'log_timestamps_no_truncate') THEN
        CREATE TRIGGER log_timestamps_no_truncate BEFORE TRUNCATE ON notary.log_timestamps
            FOR EACH STATEMENT EXECUTE FUNCTION notary.refuse_change();
    END IF;
END
$trg$;

-- The integrator stamps; the receipt endpoint and compliance staff read.
GRANT SELECT, INSERT ON notary.log_timestamps TO notary_integrator;
GRANT SELECT ON notary.log_timestamps TO notary_receipt_reader;
GRANT SELECT ON notary.log_timestamps TO notary_reader;

INSERT INTO notary.schema_version (version, description)
VALUES (4, 'RFC 3161 time-stamps of log checkpoints (log_timestamps)')
ON CONFLICT (version) DO NOTHING;
