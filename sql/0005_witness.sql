-- mod_notary record store, schema version 5: witness cosignatures of the
-- log's checkpoints (NotaryLogWitness, C2SP tlog-witness). Applied after
-- 0004; re-runnable.
--
--   notary.log_cosignatures  one cosignature line per (witness, checkpoint),
--                            as the witness answered it and the integrator
--                            verified it; append-only.
--
-- A checkpoint signed by the notary alone can be forked by whoever holds the
-- log key: two histories, each shown to a different party. A witness cosigns
-- a checkpoint only after checking it extends the last one it cosigned, so a
-- checkpoint its witnesses cosigned cannot be forked without them. The
-- newest cosigned size of a witness is where the next add-checkpoint starts
-- (its "old" size); /.notary/log/checkpoint serves the latest checkpoint with
-- the lines kept for it.
CREATE TABLE IF NOT EXISTS notary.log_cosignatures (
    witness     text NOT NULL,   -- the witness's vkey (name+id+key, type 0x04)
    size        bigint NOT NULL REFERENCES notary.log_checkpoints (size),
    cosignature text NOT NULL,   -- the note signature line, with its newline
    cosigned_at bigint NOT NULL, -- the cosignature's time, POSIX seconds
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (witness, size),
    CONSTRAINT log_cosignatures_line CHECK (octet_length(cosignature) BETWEEN 8 AND 4096
                                            AND cosignature LIKE E'\u2014 %\n'),
    CONSTRAINT log_cosignatures_time CHECK (cosigned_at > 0)
);
ALTER TABLE notary.log_cosignatures OWNER TO notary_owner;
REVOKE ALL ON notary.log_cosignatures FROM PUBLIC;

DO $trg$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'notary.log_cosignatures'::regclass
                   AND tgname = 'log_cosignatures_append_only') THEN
        CREATE TRIGGER log_cosignatures_append_only BEFORE UPDATE OR DELETE ON notary.log_cosignatures
            FOR EACH ROW EXECUTE FUNCTION notary.refuse_change();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'notary.log_cosignatures'::regclass
                   AND tgname = 'log_cosignatures_no_truncate') THEN
        CREATE TRIGGER log_cosignatures_no_truncate BEFORE TRUNCATE ON notary.log_cosignatures
            FOR EACH STATEMENT EXECUTE FUNCTION notary.refuse_change();
    END IF;
END
$trg$;

-- The integrator asks the witnesses and keeps their answers; the log
-- endpoint (the integrator's role or the receipt reader's) and compliance
-- staff read them.
GRANT SELECT, INSERT ON notary.log_cosignatures TO notary_integrator;
GRANT SELECT ON notary.log_cosignatures TO notary_receipt_reader;
GRANT SELECT ON notary.log_cosignatures TO notary_reader;

INSERT INTO notary.schema_version (version, description)
VALUES (5, 'witness cosignatures of log checkpoints (log_cosignatures)')
ON CONFLICT (version) DO NOTHING;
